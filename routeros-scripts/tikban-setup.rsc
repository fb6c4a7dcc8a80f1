# tikban-setup.rsc: run tikban, the CrowdSec bouncer, as a container on this router.
#
# 1. Upload dist/tikban-<version>-<arch>.tar (Files, or scp) and this script; or, to pull the
#    image from a registry instead, set remoteImage below and /container/config registry-url=.
# 2. Fill in the three CHANGE-ME values below.
# 3. /import tikban-setup.rsc
#
# Needs RouterOS 7 with the container package and /system/device-mode container=yes
# (docs/packaging.md). Checked against the command trees of RouterOS 7.15.3 to 7.24
# (tests/rsc_schema.rs). Importing again changes nothing. Everything created carries a comment
# starting with "tikban-setup"; tikban-remove.rsc removes exactly that.
#
# The whole script is one block: an imported file gives every top-level line its own scope,
# and the parameters must reach the code below.
{

# ==== parameters ===============================================================================

# --- the three values to fill in ---
# CrowdSec LAPI as the container reaches it (CROWDSEC_URL), e.g. "http://192.168.88.10:8080".
:local lapiUrl "CHANGE-ME"
# Bouncer API key from `cscli bouncers add tikban` (CROWDSEC_BOUNCER_API_KEY).
:local lapiKey "CHANGE-ME"
# Password of the router API user created below (MIKROTIK_PASS). Use a long random one.
:local apiPassword "CHANGE-ME"

# --- defaults that usually fit ---
# The uploaded image tar. Empty: the one file named tikban-*.tar (any disk).
:local tarFile ""
# Or the image in a registry, e.g. "ghcr.io/tikban/tikban:0.1.0" (docs/packaging.md); then no
# tar is needed, and /container/config registry-url= must point at the registry.
:local remoteImage ""
# Where the container's root filesystem is extracted. On devices with a USB disk prefer it,
# e.g. "usb1/tikban-root" (docs/reference/routeros-containers.md §4.4).
:local rootDir "tikban-root"
# Container network: a subnet private to this router, the container's address in it, and the
# router's (gateway) address, which tikban uses to reach the API.
:local containerSubnet "172.17.0.0/24"
:local containerIp "172.17.0.2"
:local gatewayIp "172.17.0.1"
# Names of the bridge and the veth interface that carry the container network.
:local bridgeName "bridge-tikban"
:local vethName "veth-tikban"
# Router API user and its group (MIKROTIK_USER); both get policy api,read,write only.
:local apiUser "tikban"
# Plain API port (MIKROTIK_HOST port). The veth never leaves the router.
:local apiPort 8728
# Address lists tikban fills (FIREWALL_IPV4_ADDRESS_LIST, FIREWALL_IPV6_ADDRESS_LIST).
:local listV4 "crowdsec-banned"
:local listV6 "crowdsec6-banned"
# Masquerade the container subnet towards the LAPI. Only needed when the LAPI host does not
# route 172.17.0.0/24 back through this router (its default gateway is another router).
# A LAPI on the internet is already covered by the default masquerade on WAN.
:local lapiSrcnat false
# Container env list holding the variables above (docs/configuration.md).
:local envList "tikban"

# ==== checks ===================================================================================

:if (($lapiUrl = "CHANGE-ME") || ($lapiKey = "CHANGE-ME") || ($apiPassword = "CHANGE-ME")) do={
    :error "tikban-setup: fill in lapiUrl, lapiKey and apiPassword at the top of the script"
}
:if ([:len $remoteImage] = 0) do={
    :if ([:len [/file/find where name=$tarFile]] = 0) do={
        :local tars [/file/find where name~"tikban-[^/]*\\.tar\$"]
        :if ([:len $tars] != 1) do={
            :error ("tikban-setup: upload exactly one tikban-*.tar or set tarFile (found " . [:len $tars] . ")")
        }
        :set tarFile [/file/get [:pick $tars 0] name]
    }
    :put ("tikban-setup: image " . $tarFile)
} else={
    :put ("tikban-setup: image " . $remoteImage . " from the registry")
}

# The version switch: $rosVer is major * 100 + minor of the running release (720 for 7.20.8).
# Commands that differ between releases are parsed from literal strings inside
# `:if ($rosVer >= N) do={…} else={…}`: written out, a property the running release lacks would
# fail the whole import. tests/rsc_schema.rs checks each branch against the releases that take it.
:local ver [/system/resource/get version]
:local dot [:find $ver "."]
:local minorText ""
:local i ($dot + 1)
:while (($i < [:len $ver]) && ([:pick $ver $i] ~ "[0-9]")) do={
    :set minorText ($minorText . [:pick $ver $i])
    :set i ($i + 1)
}
:local rosVer ([:tonum [:pick $ver 0 $dot]] * 100 + [:tonum $minorText])

:local prefixLen [:pick $containerSubnet ([:find $containerSubnet "/"] + 1) [:len $containerSubnet]]

# ==== network ==================================================================================

:if ([:len [/interface/bridge/find where name=$bridgeName]] = 0) do={
    /interface/bridge/add name=$bridgeName comment="tikban-setup: container bridge"
    :put ("tikban-setup: added bridge " . $bridgeName)
}
:if ([:len [/interface/veth/find where name=$vethName]] = 0) do={
    /interface/veth/add name=$vethName address=($containerIp . "/" . $prefixLen) gateway=$gatewayIp \
        comment="tikban-setup: container interface"
    :put ("tikban-setup: added veth " . $vethName)
}
:if ([:len [/interface/bridge/port/find where interface=$vethName]] = 0) do={
    /interface/bridge/port/add bridge=$bridgeName interface=$vethName comment="tikban-setup: container port"
}
:if ([:len [/ip/address/find where comment="tikban-setup: container gateway"]] = 0) do={
    /ip/address/add address=($gatewayIp . "/" . $prefixLen) interface=$bridgeName \
        comment="tikban-setup: container gateway"
    :put ("tikban-setup: added address " . $gatewayIp . "/" . $prefixLen)
}
:if ($lapiSrcnat && ([:len [/ip/firewall/nat/find where comment="tikban-setup: container to LAPI"]] = 0)) do={
    /ip/firewall/nat/add chain=srcnat action=masquerade src-address=$containerSubnet \
        comment="tikban-setup: container to LAPI"
    :put "tikban-setup: added srcnat for the container subnet"
}

# ==== router API access ========================================================================

# A group with exactly api,read,write: print needs read, add/remove/set need write
# (docs/reference/routeros-containers.md §5.4). The global api service stays as it is:
# restricting it would lock out other API users. The user itself only logs in from the
# container's /32.
:if ([:len [/user/group/find where name=$apiUser]] = 0) do={
    /user/group/add name=$apiUser policy=api,read,write comment="tikban-setup: API group"
}
:if ([:len [/user/find where name=$apiUser]] = 0) do={
    /user/add name=$apiUser group=$apiUser password=$apiPassword address=($containerIp . "/32") \
        comment="tikban-setup: API user"
    :put ("tikban-setup: added user " . $apiUser . ", allowed from " . $containerIp . "/32")
}
:if ([/ip/service/get api disabled]) do={
    :put "tikban-setup: WARNING the api service is disabled; tikban needs it: /ip/service/enable api"
}

# The container's API traffic enters the input chain, which the default firewall drops unless it
# comes from the LAN list: accept it before every other rule
# (docs/reference/routeros-containers.md §5.2).
:if ([:len [/ip/firewall/filter/find where comment="tikban-setup: container to router API"]] = 0) do={
    :local first [/ip/firewall/filter/find where dynamic=no]
    :if ([:len $first] > 0) do={
        /ip/firewall/filter/add chain=input action=accept protocol=tcp in-interface=$bridgeName \
            src-address=$containerIp dst-address=$gatewayIp dst-port=$apiPort \
            comment="tikban-setup: container to router API" place-before=[:pick $first 0]
    } else={
        /ip/firewall/filter/add chain=input action=accept protocol=tcp in-interface=$bridgeName \
            src-address=$containerIp dst-address=$gatewayIp dst-port=$apiPort \
            comment="tikban-setup: container to router API"
    }
    :put "tikban-setup: added input accept for the container"
}

# ==== drop rules ===============================================================================

# raw prerouting runs before connection tracking: the cheapest place to drop, and it also drops
# replies to connections opened from inside (docs/reference/routeros-api.md §10). Placed first.
:if ([:len [/ip/firewall/raw/find where comment="tikban-setup: drop CrowdSec IPv4 bans"]] = 0) do={
    :local first [/ip/firewall/raw/find where dynamic=no]
    :if ([:len $first] > 0) do={
        /ip/firewall/raw/add chain=prerouting action=drop src-address-list=$listV4 \
            comment="tikban-setup: drop CrowdSec IPv4 bans" place-before=[:pick $first 0]
    } else={
        /ip/firewall/raw/add chain=prerouting action=drop src-address-list=$listV4 \
            comment="tikban-setup: drop CrowdSec IPv4 bans"
    }
    :put ("tikban-setup: added IPv4 raw drop for list " . $listV4)
}
:if ([:len [/ipv6/firewall/raw/find where comment="tikban-setup: drop CrowdSec IPv6 bans"]] = 0) do={
    :local first [/ipv6/firewall/raw/find where dynamic=no]
    :if ([:len $first] > 0) do={
        /ipv6/firewall/raw/add chain=prerouting action=drop src-address-list=$listV6 \
            comment="tikban-setup: drop CrowdSec IPv6 bans" place-before=[:pick $first 0]
    } else={
        /ipv6/firewall/raw/add chain=prerouting action=drop src-address-list=$listV6 \
            comment="tikban-setup: drop CrowdSec IPv6 bans"
    }
    :put ("tikban-setup: added IPv6 raw drop for list " . $listV6)
}

# ==== container ================================================================================

# tikban reads only environment variables (docs/configuration.md).
:local envs ({})
:set ($envs->"CROWDSEC_URL") $lapiUrl
:set ($envs->"CROWDSEC_BOUNCER_API_KEY") $lapiKey
:set ($envs->"MIKROTIK_HOST") ($gatewayIp . ":" . $apiPort)
:set ($envs->"MIKROTIK_USER") $apiUser
:set ($envs->"MIKROTIK_PASS") $apiPassword
:set ($envs->"FIREWALL_IPV4_ADDRESS_LIST") $listV4
:set ($envs->"FIREWALL_IPV6_ADDRESS_LIST") $listV6

# RouterOS 7.20 renamed the env-list properties: /container/envs name= became list=, and
# /container envlist= became envlists= (docs/reference/routeros-containers.md §2). Values travel
# to the parsed code as arguments, never pasted into it.
:local findEnv
:local addEnv
:local addFromFile
:local addFromRegistry
:if ($rosVer >= 720) do={
    :set findEnv [:parse ":return [/container/envs/find where list=\$envGroup and key=\$envKey]"]
    :set addEnv [:parse ("/container/envs/add list=\$envGroup key=\$envKey value=\$envValue" \
        . " comment=\"tikban-setup: env\"")]
    :set addFromFile [:parse ("/container/add file=\$ctImage envlists=\$envGroup interface=\$ctVeth" \
        . " root-dir=\$ctRoot dns=\$ctDns hostname=tikban logging=yes start-on-boot=yes" \
        . " comment=\"tikban-setup: container\"")]
    :set addFromRegistry [:parse ("/container/add remote-image=\$ctImage envlists=\$envGroup" \
        . " interface=\$ctVeth root-dir=\$ctRoot dns=\$ctDns hostname=tikban logging=yes" \
        . " start-on-boot=yes comment=\"tikban-setup: container\"")]
} else={
    :set findEnv [:parse ":return [/container/envs/find where name=\$envGroup and key=\$envKey]"]
    :set addEnv [:parse ("/container/envs/add name=\$envGroup key=\$envKey value=\$envValue" \
        . " comment=\"tikban-setup: env\"")]
    :set addFromFile [:parse ("/container/add file=\$ctImage envlist=\$envGroup interface=\$ctVeth" \
        . " root-dir=\$ctRoot dns=\$ctDns hostname=tikban logging=yes start-on-boot=yes" \
        . " comment=\"tikban-setup: container\"")]
    :set addFromRegistry [:parse ("/container/add remote-image=\$ctImage envlist=\$envGroup" \
        . " interface=\$ctVeth root-dir=\$ctRoot dns=\$ctDns hostname=tikban logging=yes" \
        . " start-on-boot=yes comment=\"tikban-setup: container\"")]
}

:foreach varName,varValue in=$envs do={
    :local ids [$findEnv envGroup=$envList envKey=$varName]
    :if ([:len $ids] = 0) do={
        $addEnv envGroup=$envList envKey=$varName envValue=$varValue
    } else={
        :if ([/container/envs/get [:pick $ids 0] value] != $varValue) do={
            /container/envs/set $ids value=$varValue
            :put ("tikban-setup: updated env " . $varName)
        }
    }
}

:if ([:len [/container/find where comment="tikban-setup: container"]] = 0) do={
    :if ([:len $remoteImage] = 0) do={
        $addFromFile ctImage=$tarFile envGroup=$envList ctVeth=$vethName ctRoot=$rootDir \
            ctDns=$gatewayIp
    } else={
        $addFromRegistry ctImage=$remoteImage envGroup=$envList ctVeth=$vethName ctRoot=$rootDir \
            ctDns=$gatewayIp
    }
    :put "tikban-setup: added the container; extracting the image"
}

# Start it once the image is extracted. How a container reports its state differs between
# releases (a `status` text in older ones, flags such as `running` in newer ones), and `get` of a
# property the running release lacks is an error. A printed record carries whichever this
# release has, so read both from it. Starting fails harmlessly while the image is not ready.
:local ct [:pick [/container/find where comment="tikban-setup: container"] 0]
:local started false
:local tries 0
:while ((!$started) && ($tries < 150)) do={
    :local rec [:pick [/container/print as-value where comment="tikban-setup: container"] 0]
    :if ((($rec->"status") = "running") || ([:tostr ($rec->"running")] = "true")) do={
        :set started true
    } else={
        :do { /container/start $ct } on-error={}
        :delay 2s
        :set tries ($tries + 1)
    }
}
:if ($started) do={
    :put "tikban-setup: tikban is running; its log: /log/print where topics~\"container\""
} else={
    :put "tikban-setup: the container did not start within 5 minutes; see /container/print and /log/print"
}
}
