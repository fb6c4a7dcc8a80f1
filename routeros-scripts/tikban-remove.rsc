# tikban-remove.rsc: undo tikban-setup.rsc and tikban-app-prep.rsc.
#
# /import tikban-remove.rsc
#
# Removes exactly what those scripts created: the setup's container and its env list, every
# object whose comment starts with "tikban-setup" or "tikban-app-prep", and the dynamic
# address-list entries tikban owns in the lists their drop rules use (comment "tikban" or
# starting with "tikban ", docs/configuration.md FIREWALL_COMMENT_PREFIX). Nothing else is
# touched: not the uploaded tar, not other containers, not static or foreign address-list entries.
# Importing it twice is harmless. With the /app install, remove the app first
# (/app/remove [find name=tikban]): otherwise it re-adds its entries.
#
# It also runs when the container package is already gone (checked against RouterOS 7.15.3 to
# 7.24 with and without the package, tests/rsc_schema.rs).
{

# ==== parameters (must match tikban-setup.rsc) =================================================

# Container env list of the setup script.
:local envList "tikban"
# FIREWALL_COMMENT_PREFIX of the running tikban (default "tikban").
:local commentPrefix "tikban"

# ==== container ================================================================================

# The version switch: $rosVer is major * 100 + minor of the running release (720 for 7.20.8);
# tests/rsc_schema.rs checks each `:if ($rosVer >= N)` branch against the releases that take it.
:local ver [/system/resource/get version]
:local dot [:find $ver "."]
:local minorText ""
:local i ($dot + 1)
:while (($i < [:len $ver]) && ([:pick $ver $i] ~ "[0-9]")) do={
    :set minorText ($minorText . [:pick $ver $i])
    :set i ($i + 1)
}
:local rosVer ([:tonum [:pick $ver 0 $dot]] * 100 + [:tonum $minorText])

# /container, and from 7.21 /interface/veth, come with the container package
# (tests/data/routeros-schema/README.md). Once it is removed, a command naming them fails the
# whole file before anything runs, so they are parsed at run time, under on-error: without the
# package only they are skipped.
:do {
    :local findCt [:parse ":return [/container/find where comment=\"tikban-setup: container\"]"]
    :local stopCt [:parse "/container/stop \$ctId"]
    :local removeCt [:parse "/container/remove \$ctId"]
    :foreach ct in=[$findCt] do={
        # Stop it first, so it does not re-add entries while they are being removed. Removing
        # fails until it has stopped.
        :do { $stopCt ctId=$ct } on-error={}
        :local removed false
        :local tries 0
        :while ((!$removed) && ($tries < 30)) do={
            :do { $removeCt ctId=$ct; :set removed true } on-error={ :delay 1s; :set tries ($tries + 1) }
        }
        :if ($removed) do={
            :put "tikban-remove: removed the container"
        } else={
            :put "tikban-remove: WARNING the container did not stop within 30 s; see /container/print"
        }
    }
    # RouterOS 7.20 renamed the env list property name= to list=.
    :local removeEnvs
    :if ($rosVer >= 720) do={
        :set removeEnvs [:parse "/container/envs/remove [/container/envs/find where list=\$envGroup]"]
    } else={
        :set removeEnvs [:parse "/container/envs/remove [/container/envs/find where name=\$envGroup]"]
    }
    $removeEnvs envGroup=$envList
} on-error={
    :put "tikban-remove: skipped the container and its env list (no container package?)"
}

# ==== address-list entries tikban owns =========================================================

# Objects the setup and app-prep scripts made carry comments starting like this.
:local ours "^tikban-(setup|app-prep)"
# The lists come from those scripts' own drop rules, so no list name has to be repeated here.
:local owned ("^" . $commentPrefix . " ")
:foreach rule in=[/ip/firewall/raw/find where comment~$ours] do={
    :local banList [/ip/firewall/raw/get $rule src-address-list]
    :local entries [/ip/firewall/address-list/find where list=$banList and dynamic=yes \
        and (comment=$commentPrefix or comment~$owned)]
    :put ("tikban-remove: removing " . [:len $entries] . " entries from " . $banList)
    /ip/firewall/address-list/remove $entries
}
:foreach rule in=[/ipv6/firewall/raw/find where comment~$ours] do={
    :local banList [/ipv6/firewall/raw/get $rule src-address-list]
    :local entries [/ipv6/firewall/address-list/find where list=$banList and dynamic=yes \
        and (comment=$commentPrefix or comment~$owned)]
    :put ("tikban-remove: removing " . [:len $entries] . " entries from IPv6 " . $banList)
    /ipv6/firewall/address-list/remove $entries
}

# ==== firewall, network, user ==================================================================

/ip/firewall/raw/remove [find where comment~$ours]
/ipv6/firewall/raw/remove [find where comment~$ours]
/ip/firewall/filter/remove [find where comment~$ours]
/ip/firewall/nat/remove [find where comment~$ours]
/ip/address/remove [find where comment~$ours]
/interface/bridge/port/remove [find where comment~$ours]
# The veth: see the container section above.
:do {
    :local removeVeth [:parse "/interface/veth/remove [/interface/veth/find where comment~\"^tikban-setup\"]"]
    $removeVeth
} on-error={
    :put "tikban-remove: skipped the veth (no container package?)"
}
/interface/bridge/remove [find where comment~$ours]
/user/remove [find where comment~$ours]
/user/group/remove [find where comment~$ours]
:put "tikban-remove: done (the uploaded tar and the container's root-dir files stay; remove them under /file if unwanted)"
}
