# tikban-setup.rsc: run tikban, the CrowdSec bouncer, as a container on this router.
#
# 1. Upload dist/tikban-<version>-<arch>.tar (Files, or scp) and this script.
# 2. Fill in the three CHANGE-ME values below.
# 3. /import tikban-setup.rsc
#
# Needs RouterOS 7 with the container package and /system/device-mode container=yes
# (docs/packaging.md). Importing again changes nothing. Everything created carries a comment
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
# Where the container's root filesystem is extracted. On devices with a USB disk prefer it,
# e.g. "usb1/tikban-root" (routeros-containers.md section 4.4).
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
:if ([:len [/file/find where name=$tarFile]] = 0) do={
    :local tars [/file/find where name~"tikban-[^/]*\\.tar\$"]
    :if ([:len $tars] != 1) do={
        :error ("tikban-setup: upload exactly one tikban-*.tar or set tarFile (found " . [:len $tars] . ")")
    }
    :set tarFile [/file/get [:pick $tars 0] name]
}
:put ("tikban-setup: image " . $tarFile)

# RouterOS 7.20 renamed the env-list properties: /container/envs name= became list=, and
# /container envlist= became envlists= (routeros-containers.md section 2, property renames).
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
:local envlistProp "envlist"
:if (($major > 7) || (($major = 7) && ($minor >= 20))) do={
    :set listProp "list"
    :set envlistProp "envlists"
}

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
# (routeros-containers.md section 5.4). The global api service stays as it is: restricting it
# would lock out other API users. The user itself only logs in from the container's /32.
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
# comes from the LAN list: accept it before every other rule (routeros-containers.md 5.2).
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
# replies to connections opened from inside (routeros-api.md section 10). Placed first.
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

# The version-dependent commands are parsed at run time: a property the running version lacks
# would otherwise fail the whole import. Values travel as arguments, never pasted into code.
:local findEnv [:parse (":return [/container/envs/find where " . $listProp . "=\$l and key=\$k]")]
:local addEnv [:parse ("/container/envs/add " . $listProp . "=\$l key=\$k value=\$v comment=\"tikban-setup: env\"")]
:local addEnvPlain [:parse ("/container/envs/add " . $listProp . "=\$l key=\$k value=\$v")]
:foreach k,v in=$envs do={
    :local ids [$findEnv l=$envList k=$k]
    :if ([:len $ids] = 0) do={
        # The env comment property is not documented: fall back to an entry without it.
        :do { $addEnv l=$envList k=$k v=$v } on-error={ $addEnvPlain l=$envList k=$k v=$v }
    } else={
        :if ([/container/envs/get [:pick $ids 0] value] != $v) do={
            /container/envs/set $ids value=$v
            :put ("tikban-setup: updated env " . $k)
        }
    }
}

:if ([:len [/container/find where comment="tikban-setup: container"]] = 0) do={
    :local addContainer [:parse ("/container/add file=\$f interface=\$n root-dir=\$r " . $envlistProp \
        . "=\$e dns=\$d hostname=tikban logging=yes start-on-boot=yes comment=\"tikban-setup: container\"")]
    $addContainer f=$tarFile n=$vethName r=$rootDir e=$envList d=$gatewayIp
    :put ("tikban-setup: added container from " . $tarFile . ", extracting")
}

# Extraction takes a moment; start once it has finished. Older versions report `status`
# (extracting, stopped, running), newer ones flags; read whichever exists.
:local ct [:pick [/container/find where comment="tikban-setup: container"] 0]
:local running false
:local tries 0
:while ((!$running) && ($tries < 60)) do={
    :local state ""
    :do { :set state [/container/get $ct status] } on-error={}
    :do { :if ([/container/get $ct running]) do={ :set state "running" } } on-error={}
    :do { :if ([/container/get $ct extracting]) do={ :set state "extracting" } } on-error={}
    :if ($state = "running") do={
        :set running true
    } else={
        :if (($state != "extracting") && ($state != "pulling")) do={
            :do { /container/start $ct } on-error={}
        }
        :delay 2s
        :set tries ($tries + 1)
    }
}
:if ($running) do={
    :put "tikban-setup: tikban is running; its log: /log/print where topics~\"container\""
} else={
    :put "tikban-setup: the container did not start within 2 minutes; see /container/print and /log/print"
}
}
