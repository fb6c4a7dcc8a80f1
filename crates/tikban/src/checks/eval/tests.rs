use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn rule(table: Table, id: &str, props: &[(&str, &str)]) -> RuleRow {
    let mut all = vec![(".id", id)];
    all.extend_from_slice(props);
    all.extend_from_slice(&[
        ("bytes", "0"),
        ("packets", "0"),
        ("invalid", "false"),
        ("dynamic", "false"),
    ]);
    if !props.iter().any(|(k, _)| *k == "disabled") {
        all.push(("disabled", "false"));
    }
    RuleRow::from_props(table, all)
}

fn raw(id: &str, props: &[(&str, &str)]) -> RuleRow {
    rule(Table::Raw, id, props)
}

fn filter(id: &str, props: &[(&str, &str)]) -> RuleRow {
    rule(Table::Filter, id, props)
}

const LIST: &str = "crowdsec-banned";

fn drop_rule(id: &str) -> RuleRow {
    raw(
        id,
        &[
            ("chain", "prerouting"),
            ("action", "drop"),
            ("src-address-list", LIST),
        ],
    )
}

#[test]
fn accept_all_means_enabled_accept_with_no_matcher_at_all() {
    // Only identity, bookkeeping and logging: accept-all.
    let bare = raw(
        "*1",
        &[
            ("chain", "prerouting"),
            ("action", "accept"),
            ("comment", "let everything in"),
            ("log", "true"),
            ("log-prefix", "in"),
        ],
    );
    assert!(is_accept_all(&bare), "{bare:?}");
    // Empty values are no matchers (RouterOS prints `log-prefix=""`).
    let empty = raw(
        "*2",
        &[
            ("chain", "prerouting"),
            ("action", "accept"),
            ("src-address", ""),
        ],
    );
    assert!(is_accept_all(&empty));
    // Any matcher, known or not, excludes some packets: not accept-all.
    for (k, v) in [
        ("src-address", "192.168.88.0/24"),
        ("in-interface-list", "LAN"),
        ("in-interface-list", "!WAN"),
        ("connection-state", "established,related"),
        ("protocol", "icmp"),
        ("src-address-list", "trusted"),
        ("some-future-matcher", "x"),
    ] {
        let r = raw(
            "*3",
            &[("chain", "prerouting"), ("action", "accept"), (k, v)],
        );
        assert!(!is_accept_all(&r), "{k}={v} is a matcher");
    }
    // Not accept, or not enabled.
    for props in [
        &[("chain", "prerouting"), ("action", "drop")][..],
        &[("chain", "prerouting"), ("action", "passthrough")][..],
        &[
            ("chain", "prerouting"),
            ("action", "accept"),
            ("disabled", "true"),
        ][..],
    ] {
        assert!(!is_accept_all(&raw("*4", props)), "{props:?}");
    }
    let mut invalid = bare.clone();
    invalid.enabled = false;
    assert!(!is_accept_all(&invalid));
}

#[test]
fn a_drop_rule_after_an_accept_all_in_its_chain_is_shadowed() {
    let accept_all = raw("*1", &[("chain", "prerouting"), ("action", "accept")]);
    let rules = vec![accept_all.clone(), drop_rule("*2")];
    assert_eq!(
        drop_status(&rules, LIST),
        DropStatus::Shadowed {
            rule: drop_rule("*2"),
            by: accept_all.clone()
        }
    );
    // Before it, it shadows nothing.
    let rules = vec![drop_rule("*2"), accept_all.clone()];
    assert_eq!(
        drop_status(&rules, LIST),
        DropStatus::Enforced("raw prerouting *2".into())
    );
}

#[test]
fn only_the_same_table_and_chain_can_shadow() {
    // An accept-all in another chain of the same table.
    let other_chain = raw("*1", &[("chain", "output"), ("action", "accept")]);
    assert_eq!(
        drop_status(&[other_chain, drop_rule("*2")], LIST),
        DropStatus::Enforced("raw prerouting *2".into())
    );
    // A raw accept-all does not shadow a filter drop rule in a chain of the same name.
    let raw_input = raw("*1", &[("chain", "input"), ("action", "accept")]);
    let filter_drop = filter(
        "*5",
        &[
            ("chain", "input"),
            ("action", "drop"),
            ("src-address-list", LIST),
        ],
    );
    assert_eq!(
        drop_status(&[raw_input, filter_drop.clone()], LIST),
        DropStatus::Enforced("filter input *5".into())
    );
    // The default firewall's "accept established,related" has a matcher: it does not shadow.
    let established = filter(
        "*4",
        &[
            ("chain", "input"),
            ("action", "accept"),
            ("connection-state", "established,related,untracked"),
        ],
    );
    assert_eq!(
        drop_status(&[established, filter_drop], LIST),
        DropStatus::Enforced("filter input *5".into())
    );
}

#[test]
fn one_enforced_drop_rule_is_enough_and_disabled_or_foreign_ones_do_not_count() {
    let accept_all = raw("*1", &[("chain", "prerouting"), ("action", "accept")]);
    let reject = filter(
        "*7",
        &[
            ("chain", "forward"),
            ("action", "reject"),
            ("src-address-list", LIST),
        ],
    );
    assert_eq!(
        drop_status(&[accept_all, drop_rule("*2"), reject], LIST),
        DropStatus::Enforced("filter forward *7".into()),
        "a shadowed raw rule, but the filter reject holds"
    );

    let disabled = raw(
        "*3",
        &[
            ("chain", "prerouting"),
            ("action", "drop"),
            ("src-address-list", LIST),
            ("disabled", "true"),
        ],
    );
    assert_eq!(
        drop_status(std::slice::from_ref(&disabled), LIST),
        DropStatus::Disabled(disabled)
    );
    let negated = raw(
        "*4",
        &[
            ("chain", "prerouting"),
            ("action", "drop"),
            ("src-address-list", "!crowdsec-banned"),
        ],
    );
    let other_list = raw(
        "*5",
        &[
            ("chain", "prerouting"),
            ("action", "drop"),
            ("src-address-list", "other"),
        ],
    );
    let accepting = raw(
        "*6",
        &[
            ("chain", "prerouting"),
            ("action", "accept"),
            ("src-address-list", LIST),
        ],
    );
    assert_eq!(
        drop_status(&[negated, other_list, accepting], LIST),
        DropStatus::Missing
    );
    assert_eq!(drop_status(&[], LIST), DropStatus::Missing);
}

#[test]
fn the_drop_rules_item_names_each_problem_and_its_fix() {
    let accept_all = raw("*1", &[("chain", "prerouting"), ("action", "accept")]);
    let facts = [
        RuleFacts {
            base: "/ip",
            list: LIST.into(),
            rules: Step::Done(vec![accept_all, drop_rule("*2")]),
        },
        RuleFacts {
            base: "/ipv6",
            list: "crowdsec6-banned".into(),
            rules: Step::Done(vec![]),
        },
    ];
    let item = rules_item(&facts);
    assert_eq!(item.mark, Mark::Fail);
    assert!(
        item.detail
            .contains("crowdsec-banned: /ip raw prerouting *2 comes after *1"),
        "{}",
        item.detail
    );
    assert!(
        item.detail.contains("crowdsec6-banned: no drop rule"),
        "{}",
        item.detail
    );
    let hint = item.hint.unwrap();
    assert!(
        hint.contains("/ip/firewall/raw/move *2 destination=*1"),
        "{hint}"
    );
    assert!(
        hint.contains(
            "/ipv6/firewall/raw/add chain=prerouting action=drop src-address-list=crowdsec6-banned"
        ),
        "{hint}"
    );

    let ok = rules_item(&[RuleFacts {
        base: "/ip",
        list: LIST.into(),
        rules: Step::Done(vec![drop_rule("*2")]),
    }]);
    assert_eq!(ok.mark, Mark::Pass, "{ok:?}");
    assert_eq!(ok.detail, "crowdsec-banned: /ip raw prerouting *2");
}

#[test]
fn http_dates_parse_to_unix_seconds() {
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    // RFC 9110's example.
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(
        parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
        Some(951_825_600)
    );
    assert_eq!(
        parse_http_date("Wed, 31 Dec 2025 23:59:59 GMT"),
        Some(1_767_225_599)
    );
    for bad in [
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT extra",
    ] {
        assert_eq!(parse_http_date(bad), None, "{bad:?}");
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn clock_skew_beyond_thirty_seconds_fails_and_says_why_it_matters() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let t = 784_111_777;
    assert_eq!(skew_secs(at(t + 5), date), Some(5));
    assert_eq!(skew_secs(at(t - 5), date), Some(-5));
    assert_eq!(clock_item(Some(date), at(t)).mark, Mark::Pass);
    let near = clock_item(Some(date), at(t - 30));
    assert_eq!(
        (near.mark, near.detail.as_str()),
        (Mark::Pass, "30 s behind LAPI's")
    );
    let far = clock_item(Some(date), at(t + 31));
    assert_eq!(far.mark, Mark::Fail);
    assert_eq!(far.detail, "31 s ahead of LAPI's (more than 30 s)");
    let hint = far.hint.unwrap();
    assert!(hint.contains("durations"), "{hint}");
    assert!(
        hint.contains("/system/ntp/client/set enabled=yes"),
        "{hint}"
    );
    assert_eq!(clock_item(None, at(t)).mark, Mark::Skip);
    assert_eq!(clock_item(Some("yesterday"), at(t)).mark, Mark::Skip);
}

#[test]
fn versions_policies_and_peer_text() {
    assert_eq!(routeros_major("7.20.8 (stable)"), Some(7));
    assert_eq!(routeros_major("6.49.10 (long-term)"), Some(6));
    assert_eq!(routeros_major("unknown"), None);
    assert!(grants("api,read,write,!ftp", "write"));
    assert!(!grants("api,read,!write", "write"));
    assert!(!grants("api,read,writeonly", "write"));
    assert_eq!(safe("a\nb\u{1b}[31m\"q\"", 64), "a\\nb\\u{1b}[31m\"q\"");
    assert_eq!(safe("abcdef", 3), "abc…");
}

fn healthy() -> Facts {
    Facts {
        lapi: LapiFacts {
            url: "http://127.0.0.1:8080".into(),
            tls: LapiTls::Plain,
            client_cert: false,
            probe: LapiOutcome::Answered {
                status: 200,
                date: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
                tls_version: None,
                elapsed: Duration::from_millis(3),
                local_time: at(784_111_778),
            },
        },
        router: RouterFacts {
            target: "172.17.0.1:8728".into(),
            user: "tikban".into(),
            tls: false,
            connect: RouterConnect::Connected,
            version: Step::Done("7.20.8 (stable)".into()),
            access: Access::WriteProbe(Step::Done(WriteProbe::Done { leftover: false })),
            lists: vec![ListFacts {
                family: "IPv4",
                enabled_var: "FIREWALL_IPV4_ENABLED",
                name: Some(LIST.into()),
                count: Step::Done(ListCount {
                    total: 12,
                    owned: Some(Owned {
                        count: 10,
                        complete: true,
                    }),
                }),
            }],
            rules: vec![RuleFacts {
                base: "/ip",
                list: LIST.into(),
                rules: Step::Done(vec![drop_rule("*2")]),
            }],
            log: Step::Done(Some(1000)),
            container: Step::Done(ContainerFacts {
                containers: Some(vec![ContainerRow {
                    name: Some("tikban".into()),
                    hostname: Some("tikban".into()),
                    memory_high: None,
                    memory_max: Some("256.0MiB".into()),
                }]),
                config: None,
                hostname: Some("tikban".into()),
            }),
        },
    }
}

#[test]
fn a_healthy_setup_passes_every_item_that_applies() {
    let report = evaluate(&healthy());
    let lines: Vec<String> = report.items.iter().map(Item::line).collect();
    assert!(report.ok(), "{lines:#?}");
    assert_eq!(
        lines,
        [
            "✓ LAPI reachable: http://127.0.0.1:8080 answered in 3 ms",
            "– LAPI TLS: not used (CROWDSEC_URL is http://)",
            "✓ LAPI key: accepted (HEAD /v1/decisions answered 200)",
            "✓ clock: within 1 s of LAPI's",
            "✓ router reachable: 172.17.0.1:8728 (API)",
            "✓ router login: logged in as tikban",
            "✓ RouterOS version: 7.20.8 (stable)",
            "✓ address lists writable: a probe entry was added and removed",
            "✓ list crowdsec-banned: 12 entries, 10 of them tikban's",
            "✓ drop rules: crowdsec-banned: /ip raw prerouting *2",
            "✓ router log: readable (1000 lines)",
            "✓ container memory: container tikban: memory-max=256.0MiB",
        ]
    );
    assert!(report.render().ends_with("all checks passed\n"));
}

#[test]
fn failures_carry_hints_and_later_steps_are_skipped_not_failed() {
    let mut f = healthy();
    f.lapi.probe = LapiOutcome::Answered {
        status: 403,
        date: None,
        tls_version: None,
        elapsed: Duration::from_millis(3),
        local_time: at(0),
    };
    f.router.access = Access::WriteProbe(Step::Done(WriteProbe::Refused(
        "router error: not enough permissions (9)".into(),
    )));
    let report = evaluate(&f);
    let failed: Vec<&Item> = report
        .items
        .iter()
        .filter(|i| i.mark == Mark::Fail)
        .collect();
    assert_eq!(failed.len(), 2, "{report:#?}");
    assert!(failed.iter().all(|i| i.hint.is_some()));
    assert!(
        failed[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("cscli bouncers add")
    );
    assert!(
        failed[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("policy=api,read,write")
    );
    let text = report.render();
    assert!(text.contains("\n  hint: LAPI refused the key"), "{text}");
    assert!(text.ends_with("2 of 12 checks failed (see docs/troubleshooting.md)\n"));

    // No router: one ✗ for the connection, every router item after it is "–".
    let mut f = healthy();
    f.router.connect = RouterConnect::Unreachable("cannot connect to 172.17.0.1:8728".into());
    f.router.version = Step::NotRun("no router connection".into());
    f.router.access = Access::WriteProbe(Step::NotRun("no router connection".into()));
    f.router.lists[0].count = Step::NotRun("no router connection".into());
    f.router.rules[0].rules = Step::NotRun("no router connection".into());
    f.router.log = Step::NotRun("no router connection".into());
    f.router.container = Step::NotRun("no router connection".into());
    let report = evaluate(&f);
    assert_eq!(report.count(Mark::Fail), 1, "{report:#?}");
    assert_eq!(report.count(Mark::Skip), 8, "{report:#?}");
}

#[test]
fn lapi_failures_fail_the_right_item() {
    let mut f = healthy().lapi;
    f.probe = LapiOutcome::Unreachable("cannot connect to LAPI at 10.0.0.1:8080".into());
    let items = lapi_items(&f);
    assert_eq!(items[0].mark, Mark::Fail);
    assert!(items[1..].iter().all(|i| i.mark == Mark::Skip));

    // Connected but silent: overloaded, not unreachable, and the hint says so.
    f.probe = LapiOutcome::NoAnswer(Duration::from_secs(9));
    let items = lapi_items(&f);
    assert_eq!(items[0].mark, Mark::Fail);
    assert!(
        items[0]
            .detail
            .contains("connected, but no answer within 9 s"),
        "{items:?}"
    );
    let hint = items[0].hint.as_deref().unwrap();
    assert!(
        hint.contains("overloaded") && !hint.contains("firewall"),
        "{hint}"
    );
    assert!(items[1..].iter().all(|i| i.mark == Mark::Skip));

    f.tls = LapiTls::Verified { extra_ca: true };
    f.probe = LapiOutcome::Tls(
        "TLS handshake with LAPI 10.0.0.1 failed: invalid peer certificate: UnknownIssuer".into(),
    );
    let items = lapi_items(&f);
    assert_eq!(
        items.iter().map(|i| i.mark).collect::<Vec<_>>(),
        [Mark::Pass, Mark::Fail, Mark::Skip, Mark::Skip]
    );
    assert!(
        items[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("CROWDSEC_CA_CERT_PATH")
    );

    f.client_cert = true;
    f.probe = LapiOutcome::Answered {
        status: 403,
        date: None,
        tls_version: Some("TLSv1_3".into()),
        elapsed: Duration::ZERO,
        local_time: at(0),
    };
    let items = lapi_items(&f);
    assert_eq!(
        items[1].line(),
        "✓ LAPI TLS: TLSv1_3, certificate verified against the web PKI roots and the configured CA"
    );
    assert_eq!(items[2].name, "LAPI client certificate");
    assert!(
        items[2]
            .hint
            .as_deref()
            .unwrap()
            .contains("bouncers_allowed_ou")
    );
}

#[test]
fn the_startup_policy_item_reads_the_group() {
    let item = |policy: &str| {
        access_item(
            &Access::Policy(Step::Done(Some(PolicyFacts {
                group: "tikban".into(),
                policy: policy.into(),
            }))),
            "tikban",
        )
    };
    assert_eq!(
        item("api,read,write,!ftp,!local").line(),
        "✓ API user policy: group tikban grants api,read,write"
    );
    assert!(
        item("local,ssh,read,write,api,policy")
            .detail
            .contains("more than tikban needs")
    );
    let lacking = item("api,read,!write");
    assert_eq!(
        lacking.line(),
        "✗ API user policy: group tikban lacks write"
    );
    assert!(
        lacking
            .hint
            .unwrap()
            .contains("/user/group/set tikban policy=api,read,write")
    );
    // A built-in group is shared: the hint gives tikban a group of its own.
    let builtin = access_item(
        &Access::Policy(Step::Done(Some(PolicyFacts {
            group: "read".into(),
            policy: "local,telnet,ssh,read,api,!write".into(),
        }))),
        "tikban-edge",
    );
    assert_eq!(builtin.mark, Mark::Fail);
    assert!(
        builtin.hint.as_deref().unwrap_or_default().ends_with(
            "/user/group/add name=tikban policy=api,read,write, then /user/set tikban-edge \
             group=tikban"
        ),
        "{builtin:?}"
    );
    let unreadable = access_item(
        &Access::Policy(Step::Failed("no such command".into())),
        "tikban",
    );
    assert_eq!(unreadable.mark, Mark::Skip);
}

#[test]
fn container_memory_is_informative_only() {
    let item = |c| container_item(&Step::Done(c));
    assert_eq!(
        item(ContainerFacts::default()).line(),
        "– container memory: not reported"
    );
    assert_eq!(
        container_item(&Step::Failed("no such command prefix".into())).mark,
        Mark::Skip
    );
    let two = ContainerFacts {
        containers: Some(vec![
            ContainerRow {
                name: Some("pihole".into()),
                memory_high: Some("128.0MiB".into()),
                ..ContainerRow::default()
            },
            ContainerRow {
                name: Some("tikban".into()),
                hostname: Some("tikban".into()),
                memory_high: Some("64.0MiB".into()),
                ..ContainerRow::default()
            },
        ]),
        config: Some(vec![("ram-high".into(), "0".into())]),
        hostname: Some("tikban".into()),
    };
    assert_eq!(
        item(two).line(),
        "✓ container memory: container tikban: memory-high=64.0MiB; /container/config: ram-high=0"
    );
}
