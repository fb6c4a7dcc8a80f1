# Fixture of tests/rsc_schema.rs (checker_reports_exactly_what_a_release_lacks): lines 5, 18, 20,
# 22 and 24 use what releases lack; every other line is right, some only thanks to a branch.
{
:local rosVer 720
/container/add file=tikban.tar interface=veth1 envlist=tikban
:if ($rosVer >= 720) do={
    /container/add file=tikban.tar interface=veth1 envlists=tikban
} else={
    /container/add file=tikban.tar interface=veth1 envlist=tikban
}
:local addEnv
:if ($rosVer >= 720) do={
    :set addEnv [:parse "/container/envs/add list=\$group key=K value=V"]
} else={
    :set addEnv [:parse "/container/envs/add name=\$group key=K value=V"]
}
# /log/print takes with-extra-info from 7.19 only, and the code of a :parse string is checked
:local logs [:parse "/log/print with-extra-info where topics~\"container\""]
/ip/firewall/filter/print where chain=input
:put [/ip/firewall/filter/find where running]
:local banList "crowdsec-banned"
/ip/firewall/address-list/print where list=$list and dynamic=yes
/ip/firewall/address-list/print where list=$banList
/interface/wireguard/peers/foo
}
