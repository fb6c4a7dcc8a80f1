# tikban-remove.rsc: undo tikban-setup.rsc.
#
# /import tikban-remove.rsc
#
# Removes exactly what the setup script created: every object whose comment starts with
# "tikban-setup", the container's env list, and the dynamic address-list entries tikban owns in
# the lists the setup's drop rules use (comment "tikban" or starting with "tikban ",
# docs/configuration.md FIREWALL_COMMENT_PREFIX). Nothing else is touched: not the uploaded tar,
# not other containers, not static or foreign address-list entries. Importing it twice is harmless.
{

# ==== parameters (must match tikban-setup.rsc) =================================================

# Container env list of the setup script.
:local envList "tikban"
# FIREWALL_COMMENT_PREFIX of the running tikban (default "tikban").
:local commentPrefix "tikban"

# ==== container ================================================================================

# Stop it first, so it does not re-add entries while they are being removed.
:foreach ct in=[/container/find where comment="tikban-setup: container"] do={
    :do { /container/stop $ct } on-error={}
    :local tries 0
    :local stopped false
    :while ((!$stopped) && ($tries < 30)) do={
        :local state ""
        :do { :set state [/container/get $ct status] } on-error={}
        :do { :if ([/container/get $ct stopped]) do={ :set state "stopped" } } on-error={}
        :if ($state = "stopped") do={ :set stopped true } else={ :delay 1s; :set tries ($tries + 1) }
    }
    /container/remove $ct
    :put "tikban-remove: removed the container"
}

# The env list property is `name` before RouterOS 7.20 and `list` after
# (routeros-containers.md section 2); parsed at run time so either version imports this file.
:local ver [/system/resource/get version]
:local dot [:find $ver "."]
:local major [:tonum [:pick $ver 0 $dot]]
:local minorText ""
:local i ($dot + 1)
:while (($i < [:len $ver]) && ([:pick $ver $i] ~ "[0-9]")) do={
    :set minorText ($minorText . [:pick $ver $i])
    :set i ($i + 1)
}
:local minor [:tonum $minorText]
:local listProp "name"
:if (($major > 7) || (($major = 7) && ($minor >= 20))) do={ :set listProp "list" }
:local removeEnvs [:parse ("/container/envs/remove [/container/envs/find where " . $listProp . "=\$l]")]
$removeEnvs l=$envList

# ==== address-list entries tikban owns =========================================================

# The lists come from the setup's own drop rules, so no list name has to be repeated here.
:local owned ("^" . $commentPrefix . " ")
:foreach rule in=[/ip/firewall/raw/find where comment~"^tikban-setup"] do={
    :local list [/ip/firewall/raw/get $rule src-address-list]
    :local entries [/ip/firewall/address-list/find where list=$list and dynamic=yes \
        and (comment=$commentPrefix or comment~$owned)]
    :put ("tikban-remove: removing " . [:len $entries] . " entries from " . $list)
    /ip/firewall/address-list/remove $entries
}
:foreach rule in=[/ipv6/firewall/raw/find where comment~"^tikban-setup"] do={
    :local list [/ipv6/firewall/raw/get $rule src-address-list]
    :local entries [/ipv6/firewall/address-list/find where list=$list and dynamic=yes \
        and (comment=$commentPrefix or comment~$owned)]
    :put ("tikban-remove: removing " . [:len $entries] . " entries from IPv6 " . $list)
    /ipv6/firewall/address-list/remove $entries
}

# ==== firewall, network, user ==================================================================

/ip/firewall/raw/remove [find where comment~"^tikban-setup"]
/ipv6/firewall/raw/remove [find where comment~"^tikban-setup"]
/ip/firewall/filter/remove [find where comment~"^tikban-setup"]
/ip/firewall/nat/remove [find where comment~"^tikban-setup"]
/ip/address/remove [find where comment~"^tikban-setup"]
/interface/bridge/port/remove [find where comment~"^tikban-setup"]
# (The checker's schema lacks /interface/veth, part of the container package; an explicit path
# keeps it from resolving `find` against /interface.)
/interface/veth/remove [/interface/veth/find where comment~"^tikban-setup"]
/interface/bridge/remove [find where comment~"^tikban-setup"]
/user/remove [find where comment~"^tikban-setup"]
/user/group/remove [find where comment~"^tikban-setup"]
:put "tikban-remove: done (the uploaded tar and the container's root-dir files stay; remove them under /file if unwanted)"
}
