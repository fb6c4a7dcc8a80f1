# tikban-app-prep.rsc: what the tikban /app (tikban.tikapp.yaml) cannot set up itself.
#
# RouterOS 7.22 or later, after the app has been added (this script reads its address):
# 1. Fill in apiPassword below: the MIKROTIK_PASS of the app.
# 2. /import tikban-app-prep.rsc
#
# It creates, each only if missing and each with a comment starting "tikban-app-prep": a user
# group with policy api,read,write only, a user that may log in only from the app's container, an
# input accept for the container's API traffic, and raw prerouting drop rules for both lists.
# Importing it again only follows a changed container address. tikban-remove.rsc removes it all.
# Checked against RouterOS 7.22.3 to 7.24 (tests/rsc_schema.rs).
{

# ==== parameters ===============================================================================

# Password of the router API user: the MIKROTIK_PASS of the app.
:local apiPassword "CHANGE-ME"
# The router API user and its group: the MIKROTIK_USER of the app.
:local apiUser "tikban"
# The API port: the port in the app's MIKROTIK_HOST.
:local apiPort 8728
# Address lists: the app's FIREWALL_IPV4_ADDRESS_LIST and FIREWALL_IPV6_ADDRESS_LIST.
:local listV4 "crowdsec-banned"
:local listV6 "crowdsec6-banned"
# The app container's address. Empty: read it from the app's interface, which /app names
# veth-app- and the first six letters of the app name.
:local containerIp ""

# ==== checks ===================================================================================

:if ($apiPassword = "CHANGE-ME") do={
    :error "tikban-app-prep: fill in apiPassword (the app's MIKROTIK_PASS) at the top of the script"
}
# The version switch: $rosVer is major * 100 + minor of the running release (722 for 7.22.3).
:local ver [/system/resource/get version]
:local dot [:find $ver "."]
:local minorText ""
:local i ($dot + 1)
:while (($i < [:len $ver]) && ([:pick $ver $i] ~ "[0-9]")) do={
    :set minorText ($minorText . [:pick $ver $i])
    :set i ($i + 1)
}
:local rosVer ([:tonum [:pick $ver 0 $dot]] * 100 + [:tonum $minorText])
:if ($rosVer < 722) do={
    :error "tikban-app-prep: /app needs RouterOS 7.22 or later; use tikban-setup.rsc"
}
:if ([:len $containerIp] = 0) do={
    :local veth [/interface/veth/find where name="veth-app-tikban"]
    :if ([:len $veth] = 0) do={
        :error "tikban-app-prep: add the tikban app first (no interface veth-app-tikban), or set containerIp"
    }
    # The first address, without its prefix length.
    :local addresses [:tostr [/interface/veth/get [:pick $veth 0] address]]
    :set containerIp [:pick $addresses 0 [:find $addresses "/"]]
    :if ([:len $containerIp] = 0) do={
        :error "tikban-app-prep: veth-app-tikban has no address yet; start the app, or set containerIp"
    }
}
:put ("tikban-app-prep: the app's container is " . $containerIp)

# ==== router API access ========================================================================

# Exactly api,read,write: print needs read, add/remove/set need write
# (docs/reference/routeros-containers.md §5.4). The user logs in only from the container.
:if ([:len [/user/group/find where name=$apiUser]] = 0) do={
    /user/group/add name=$apiUser policy=api,read,write comment="tikban-app-prep: API group"
}
:local login [/user/find where name=$apiUser]
:if ([:len $login] = 0) do={
    /user/add name=$apiUser group=$apiUser password=$apiPassword address=($containerIp . "/32") \
        comment="tikban-app-prep: API user"
    :put ("tikban-app-prep: added user " . $apiUser . ", allowed from " . $containerIp . "/32")
} else={
    :if ([/user/get $login comment] != "tikban-app-prep: API user") do={
        :error ("tikban-app-prep: a user " . $apiUser . " exists already; remove it or set apiUser")
    }
    /user/set $login address=($containerIp . "/32")
}
:if ([/ip/service/get api disabled]) do={
    :put "tikban-app-prep: WARNING the api service is disabled; tikban needs it: /ip/service/enable api"
}

# The container's API traffic enters the input chain, which the default firewall drops unless it
# comes from the LAN list: accept it before every other rule
# (docs/reference/routeros-containers.md §5.2).
:local acceptRule [/ip/firewall/filter/find where comment="tikban-app-prep: container to router API"]
:if ([:len $acceptRule] = 0) do={
    :local first [/ip/firewall/filter/find where dynamic=no]
    :if ([:len $first] > 0) do={
        /ip/firewall/filter/add chain=input action=accept protocol=tcp src-address=$containerIp \
            dst-port=$apiPort comment="tikban-app-prep: container to router API" \
            place-before=[:pick $first 0]
    } else={
        /ip/firewall/filter/add chain=input action=accept protocol=tcp src-address=$containerIp \
            dst-port=$apiPort comment="tikban-app-prep: container to router API"
    }
    :put "tikban-app-prep: added input accept for the container"
} else={
    /ip/firewall/filter/set $acceptRule src-address=$containerIp dst-port=$apiPort
}

# ==== drop rules ===============================================================================

# raw prerouting runs before connection tracking: the cheapest place to drop, and it also drops
# replies to connections opened from inside (docs/reference/routeros-api.md §10). Placed first.
:if ([:len [/ip/firewall/raw/find where comment="tikban-app-prep: drop CrowdSec IPv4 bans"]] = 0) do={
    :local first [/ip/firewall/raw/find where dynamic=no]
    :if ([:len $first] > 0) do={
        /ip/firewall/raw/add chain=prerouting action=drop src-address-list=$listV4 \
            comment="tikban-app-prep: drop CrowdSec IPv4 bans" place-before=[:pick $first 0]
    } else={
        /ip/firewall/raw/add chain=prerouting action=drop src-address-list=$listV4 \
            comment="tikban-app-prep: drop CrowdSec IPv4 bans"
    }
    :put ("tikban-app-prep: added IPv4 raw drop for list " . $listV4)
}
:if ([:len [/ipv6/firewall/raw/find where comment="tikban-app-prep: drop CrowdSec IPv6 bans"]] = 0) do={
    :local first [/ipv6/firewall/raw/find where dynamic=no]
    :if ([:len $first] > 0) do={
        /ipv6/firewall/raw/add chain=prerouting action=drop src-address-list=$listV6 \
            comment="tikban-app-prep: drop CrowdSec IPv6 bans" place-before=[:pick $first 0]
    } else={
        /ipv6/firewall/raw/add chain=prerouting action=drop src-address-list=$listV6 \
            comment="tikban-app-prep: drop CrowdSec IPv6 bans"
    }
    :put ("tikban-app-prep: added IPv6 raw drop for list " . $listV6)
}
}
