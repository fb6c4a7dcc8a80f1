//! Socket tests: raw RouterOS API sentences (through `routeros-proto`) against a served sim on
//! `127.0.0.1:0`. Section numbers refer to `docs/reference/routeros-api.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::*;
use routeros_proto::{Reply, ReplyKind};
use routeros_sim::{CostModel, Direction, Family, NewEntry, Sim, SimConfig, Table, User};
use tokio::net::TcpStream;

async fn add(c: &mut Conn, list: &str, address: &str, timeout: Option<&str>) -> Vec<Reply> {
    let mut words = vec![
        format!("{AL}/add"),
        format!("=list={list}"),
        format!("=address={address}"),
    ];
    if let Some(t) = timeout {
        words.push(format!("=timeout={t}"));
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    c.call(&words).await
}

// === login (§4) ===

#[tokio::test]
async fn login_succeeds_with_done() {
    let (sim, server) = serve(SimConfig::default().with_user("tikban", "pw")).await;
    let _c = Conn::login_as(&server, "tikban", "pw").await;
    assert_eq!(sim.stats().logins, 1);
}

#[tokio::test]
async fn bad_login_traps_then_done_then_closes() {
    let (sim, server) = serve(SimConfig::default().with_user("tikban", "pw")).await;
    let mut c = Conn::open(&server).await;
    let r = c.call(&["/login", "=name=tikban", "=password=nope"]).await;
    assert_trap(&r, "invalid user name or password (6)");
    assert!(r[0].category().is_none());
    assert!(c.closed_within(Duration::from_secs(2)).await);
    assert_eq!(sim.stats().failed_logins, 1);
}

#[tokio::test]
async fn legacy_challenge_login_below_6_43() {
    let (_sim, server) = serve(
        SimConfig::default()
            .with_user("old", "pw")
            .with_version("6.42.12"),
    )
    .await;
    let mut c = Conn::open(&server).await;
    let r = c.call(&["/login"]).await;
    let challenge = attr(&r[0], "ret").to_owned();
    assert_eq!(challenge.len(), 32);
    let resp = routeros_proto::login::legacy_response(challenge.as_bytes(), b"pw").unwrap();
    let r = c
        .call(&["/login", "=name=old", &format!("=response={resp}")])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let r = c.call(&["/system/identity/print"]).await;
    assert_eq!(attr(&r[0], "name"), "MikroTik");

    let mut bad = Conn::open(&server).await;
    bad.call(&["/login"]).await;
    let r = bad
        .call(&["/login", "=name=old", "=response=00deadbeef"])
        .await;
    assert_trap(&r, "cannot log in");
}

#[tokio::test]
async fn commands_before_login_are_refused_then_fatal() {
    let cfg = SimConfig {
        max_commands_before_login: 2,
        ..SimConfig::default()
    };
    let (_sim, server) = serve(cfg).await;
    let mut c = Conn::open(&server).await;
    for _ in 0..2 {
        let r = c.call(&[&format!("{AL}/print")]).await;
        assert_trap(&r, "not logged in");
    }
    c.send(&[&format!("{AL}/print")]).await;
    let r = c.recv().await;
    assert_eq!(r.kind, ReplyKind::Fatal);
    assert!(c.closed_within(Duration::from_secs(2)).await);
}

// === tags, interleaving, cancel, quit (§3, §5) ===

#[tokio::test]
async fn tagged_pipelined_commands_all_complete_with_their_tags() {
    let (_sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    let mut buf = Vec::new();
    Conn::encode(
        &[
            &format!("{AL}/add"),
            "=list=l",
            "=address=192.0.2.1",
            "=timeout=1h",
            ".tag=a",
        ],
        &mut buf,
    );
    Conn::encode(
        &[
            &format!("{AL}/add"),
            "=list=l",
            "=address=192.0.2.1",
            "=timeout=1h",
            ".tag=b",
        ],
        &mut buf,
    );
    Conn::encode(&[&format!("{AL}/print"), "?list=l", ".tag=c"], &mut buf);
    Conn::encode(&["/system/identity/print"], &mut buf);
    c.send_raw(&buf).await;
    let mut by_tag: std::collections::HashMap<Option<String>, Vec<Reply>> = Default::default();
    let mut done = 0;
    while done < 4 {
        let r = c.recv().await;
        if r.kind == ReplyKind::Done {
            done += 1;
        }
        by_tag
            .entry(r.tag_str().map(str::to_owned))
            .or_default()
            .push(r);
    }
    let a = &by_tag[&Some("a".into())];
    assert_eq!(kinds(a), [ReplyKind::Done]);
    assert_eq!(a[0].ret(), Some(&b"*1"[..]));
    assert_trap(
        &by_tag[&Some("b".into())],
        "failure: already have such entry",
    );
    let p = &by_tag[&Some("c".into())];
    assert_eq!(kinds(p), [ReplyKind::Re, ReplyKind::Done]);
    assert_eq!(attr(&p[0], "address"), "192.0.2.1");
    assert_eq!(attr(&by_tag[&None][0], "name"), "MikroTik");
}

#[tokio::test]
async fn cancel_ends_follow_print_with_interrupted() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    sim.insert_entry(Family::V4, NewEntry::new("l", "192.0.2.1"))
        .unwrap();
    c.send(&[
        &format!("{AL}/print"),
        "=follow=",
        "?list=l",
        "=.proplist=.id,address",
        ".tag=f",
    ])
    .await;
    let first = c.recv().await;
    assert_eq!((first.kind, first.tag_str()), (ReplyKind::Re, Some("f")));
    assert_eq!(attr(&first, "address"), "192.0.2.1");
    // A change streams in.
    sim.insert_entry(Family::V4, NewEntry::new("l", "192.0.2.2"))
        .unwrap();
    let next = c.recv().await;
    assert_eq!(attr(&next, "address"), "192.0.2.2");
    assert!(sim.remove_entry(Family::V4, "*1"));
    let dead = c.recv().await;
    assert_eq!(attr(&dead, ".id"), "*1");
    assert_eq!(attr(&dead, ".dead"), "true");

    c.send(&["/cancel", "=tag=f", ".tag=c"]).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let r = c.recv().await;
        got.push((
            r.kind,
            r.tag_str().map(str::to_owned),
            msg(&r).to_owned(),
            r.category(),
        ));
    }
    let f: Vec<_> = got.iter().filter(|g| g.1.as_deref() == Some("f")).collect();
    assert_eq!(f.len(), 3, "{got:?}");
    assert_eq!(
        (f[0].0, f[0].2.as_str(), f[0].3),
        (ReplyKind::Trap, "interrupted", Some(2))
    );
    assert_eq!(f[1].0, ReplyKind::Empty);
    assert_eq!(f[2].0, ReplyKind::Done);
    assert!(
        got.iter()
            .any(|g| g.1.as_deref() == Some("c") && g.0 == ReplyKind::Done)
    );
}

#[tokio::test]
async fn cancel_interrupts_a_slow_write() {
    let cfg = SimConfig::default().with_cost(CostModel {
        per_write: Duration::from_secs(30),
        latency: Duration::ZERO,
    });
    let (sim, server) = serve(cfg).await;
    let mut c = Conn::admin(&server).await;
    c.send(&[
        &format!("{AL}/add"),
        "=list=l",
        "=address=192.0.2.1",
        "=timeout=1h",
        ".tag=slow",
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&["/cancel", "=tag=slow", ".tag=c"]).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = c.recv().await;
        got.push((r.kind, r.tag_str().map(str::to_owned), msg(&r).to_owned()));
    }
    let slow: Vec<_> = got
        .iter()
        .filter(|g| g.1.as_deref() == Some("slow"))
        .collect();
    assert_eq!(slow.len(), 2, "{got:?}");
    assert_eq!(
        (slow[0].0, slow[0].2.as_str()),
        (ReplyKind::Trap, "interrupted")
    );
    assert_eq!(slow[1].0, ReplyKind::Done);
    assert!(
        sim.all_entries(Family::V4).is_empty(),
        "a cancelled add must not apply"
    );
}

#[tokio::test]
async fn quit_sends_fatal_with_bare_reason_and_closes() {
    let (_sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    c.send(&["/quit", ".tag=9"]).await;
    let r = c.recv().await;
    assert_eq!(r.kind, ReplyKind::Fatal);
    assert_eq!(
        r.fatal_reason(),
        Some(&b"session terminated on request"[..])
    );
    assert_eq!(r.tag, None, "!fatal carries no .tag (§3)");
    assert!(c.closed_within(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn unknown_commands_and_parameters_trap() {
    let (_sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    assert_trap(&c.call(&["/nope/print"]).await, "no such command prefix");
    assert_trap(
        &c.call(&[&format!("{AL}/frobnicate")]).await,
        "no such command",
    );
    let r = c
        .call(&[
            &format!("{AL}/add"),
            "=list=l",
            "=address=192.0.2.1",
            "=colour=red",
        ])
        .await;
    assert_trap(&r, "unknown parameter colour");
    let r = c.call(&[&format!("{AL}/print"), "=bogus="]).await;
    assert_trap(&r, "unknown parameter bogus");
}

// === print (§3, §6) ===

#[tokio::test]
async fn empty_print_sends_empty_then_done_from_7_18() {
    let (_sim, server) = serve(SimConfig::default().with_version("7.18")).await;
    let mut c = Conn::admin(&server).await;
    let r = c
        .call(&[&format!("{AL}/print"), "?list=none", ".tag=1"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Empty, ReplyKind::Done]);
    assert!(r.iter().all(|x| x.tag_str() == Some("1")));
}

#[tokio::test]
async fn empty_print_sends_only_done_before_7_18() {
    let (_sim, server) = serve(SimConfig::default().with_version("7.17.2")).await;
    let mut c = Conn::admin(&server).await;
    let r = c.call(&[&format!("{AL}/print"), "?list=none"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
}

#[tokio::test]
async fn count_only_proplist_and_queries() {
    let (_sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    add(&mut c, "a", "192.0.2.1", Some("1h")).await;
    add(&mut c, "a", "192.0.2.2", None).await;
    add(&mut c, "b", "192.0.2.3", Some("1h")).await;
    let r = c
        .call(&[&format!("{AL}/print"), "=count-only=", "?list=a"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(r[0].ret(), Some(&b"2"[..]));
    let r = c
        .call(&[
            &format!("{AL}/print"),
            "=.proplist=.id,address",
            "?=list=a",
            "?dynamic=true",
            "?#&",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Re, ReplyKind::Done]);
    let keys: Vec<&[u8]> = r[0].attributes.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&b".id"[..], b"address"]);
    assert_eq!(attr(&r[0], "address"), "192.0.2.1");
    // "not equal" form of librouteros.
    let r = c.call(&[&format!("{AL}/print"), "?=list=a", "?#!"]).await;
    assert_eq!(attr(&r[0], "list"), "b");
    // Static entries print without timeout; dynamic ones in v7 form.
    let r = c.call(&[&format!("{AL}/print"), "?list=a"]).await;
    assert!(r[0].attributes.get("timeout").is_some());
    assert_eq!(attr(&r[1], "dynamic"), "false");
    assert!(r[1].attributes.get("timeout").is_none());
    assert!(r[1].attributes.get("comment").is_none());
    let ct = attr(&r[0], "creation-time");
    assert_eq!(ct.len(), 19, "{ct}");
}

// === address-list semantics (§9) ===

#[tokio::test]
async fn duplicate_add_traps_then_done() {
    let (_sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    assert_eq!(
        kinds(&add(&mut c, "l", "192.0.2.1/32", Some("1h")).await),
        [ReplyKind::Done]
    );
    // Same normalised address.
    assert_trap(
        &add(&mut c, "l", "192.0.2.1", Some("2h")).await,
        "failure: already have such entry",
    );
    // Another list is another namespace, overlap is fine.
    assert_eq!(
        kinds(&add(&mut c, "m", "192.0.2.1", Some("1h")).await),
        [ReplyKind::Done]
    );
    assert_eq!(
        kinds(&add(&mut c, "l", "192.0.2.0/24", Some("1h")).await),
        [ReplyKind::Done]
    );
}

#[tokio::test]
async fn timeout_above_maximum_is_out_of_range() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    let r = add(&mut c, "l", "192.0.2.1", Some("35w3d13:13:57")).await;
    assert_trap(
        &r,
        "value of timeout is out of range (00:00:00 .. 35w3d13:13:56)",
    );
    let r = add(&mut c, "l", "192.0.2.1", Some("21474837s")).await;
    assert_trap(
        &r,
        "value of timeout is out of range (00:00:00 .. 35w3d13:13:56)",
    );
    assert_eq!(
        kinds(&add(&mut c, "l", "192.0.2.1", Some("35w3d13:13:56")).await),
        [ReplyKind::Done]
    );
    let e = &sim.address_list(Family::V4, "l")[0];
    assert!(e.timeout_remaining.unwrap() > Duration::from_secs(21_474_000));
}

#[tokio::test]
async fn normalisation_over_the_wire() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    for a in [
        "203.0.113.77/24",
        "198.51.100.0-198.51.100.255",
        "203.0.113.1-254",
    ] {
        assert_eq!(
            kinds(&add(&mut c, "l", a, Some("1h")).await),
            [ReplyKind::Done],
            "{a}"
        );
    }
    let got: Vec<String> = sim
        .address_list(Family::V4, "l")
        .into_iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(
        got,
        ["203.0.113.0/24", "198.51.100.0/24", "203.0.113.1-254"]
    );

    let r = c
        .call(&[
            "/ipv6/firewall/address-list/add",
            "=list=l",
            "=address=2001:db8::1",
            "=timeout=1h",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let r = c
        .call(&[
            "/ipv6/firewall/address-list/add",
            "=list=l",
            "=address=2001:db8::1-2001:db8::5",
        ])
        .await;
    assert_trap(
        &r,
        "failure: 2001:db8::1-2001:db8::5 is not a valid dns name",
    );
    assert_eq!(
        sim.address_list(Family::V6, "l")[0].address,
        "2001:db8::1/128"
    );
    assert!(sim.address_list(Family::V4, "x").is_empty());
}

#[tokio::test]
async fn remove_takes_comma_lists_and_stops_at_a_missing_id() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    for i in 1..=4 {
        add(&mut c, "l", &format!("192.0.2.{i}"), Some("1h")).await;
    }
    let r = c.call(&[&format!("{AL}/remove"), "=.id=*1,*3"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let left: Vec<String> = sim
        .all_entries(Family::V4)
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, ["*2", "*4"]);
    let r = c.call(&[&format!("{AL}/remove"), "=numbers=*1"]).await;
    assert_trap(&r, "no such item");
    // MikroTik manual: the items before the missing one are removed, then the trap; the rest
    // stays.
    let r = c.call(&[&format!("{AL}/remove"), "=.id=*2,*99,*4"]).await;
    assert_trap(&r, "no such item");
    let left: Vec<String> = sim
        .all_entries(Family::V4)
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, ["*4"]);
}

#[tokio::test]
async fn set_extends_timeout_and_edits_comment() {
    let (sim, server) = serve(SimConfig::default().with_manual_clock()).await;
    let mut c = Conn::admin(&server).await;
    add(&mut c, "l", "192.0.2.1", Some("1h")).await;
    sim.clock().advance(Duration::from_secs(1800));
    let r = c
        .call(&[
            &format!("{AL}/set"),
            "=.id=*1",
            "=timeout=2h",
            "=comment=tikban",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let r = c
        .call(&[&format!("{AL}/print"), "=.proplist=timeout,comment"])
        .await;
    assert_eq!(attr(&r[0], "timeout"), "2h");
    assert_eq!(attr(&r[0], "comment"), "tikban");
    assert_trap(
        &c.call(&[&format!("{AL}/set"), "=.id=*7", "=comment=x"])
            .await,
        "no such item",
    );
    assert_eq!(sim.persistent_writes(), 0);
}

#[tokio::test]
async fn clock_advance_expires_entries_and_counts_down() {
    let (sim, server) = serve(SimConfig::default().with_manual_clock()).await;
    let mut c = Conn::admin(&server).await;
    add(&mut c, "l", "192.0.2.1", Some("1d")).await;
    add(&mut c, "l", "192.0.2.2", Some("1w2d3h4m5s")).await;
    sim.clock().advance(Duration::from_secs(5));
    let r = c
        .call(&[&format!("{AL}/print"), "=.proplist=timeout"])
        .await;
    assert_eq!(attr(&r[0], "timeout"), "23h59m55s");
    assert_eq!(attr(&r[1], "timeout"), "1w2d3h4m");
    sim.clock().advance(Duration::from_secs(86_395));
    let r = c
        .call(&[&format!("{AL}/print"), "=.proplist=address"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Re, ReplyKind::Done]);
    assert_eq!(attr(&r[0], "address"), "192.0.2.2");
    // The freed (list, address) can be added again.
    assert_eq!(
        kinds(&add(&mut c, "l", "192.0.2.1", Some("1h")).await),
        [ReplyKind::Done]
    );
}

#[tokio::test]
async fn realtime_clock_counts_down_with_tokio_time() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    add(&mut c, "l", "192.0.2.1", Some("2s")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(sim.all_entries(Family::V4).is_empty());
}

#[tokio::test]
async fn only_static_entries_count_as_persistent_writes() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    add(&mut c, "l", "192.0.2.1", Some("1h")).await;
    let r = c
        .call(&[
            &format!("{AL}/add"),
            "=list=l",
            "=address=192.0.2.2",
            "=dynamic=yes",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(sim.persistent_writes(), 0);
    let e = sim.address_list(Family::V4, "l");
    assert!(e.iter().all(|e| e.dynamic));
    assert_eq!(e[1].timeout_remaining, None);

    add(&mut c, "l", "192.0.2.3", None).await;
    assert_eq!(sim.persistent_writes(), 1);
    assert!(!sim.address_list(Family::V4, "l")[2].dynamic);
    c.call(&["/system/script/add", "=name=bulk", "=source=:put 1"])
        .await;
    assert_eq!(sim.persistent_writes(), 2);
    // Seeding through the library is not a client write.
    sim.insert_entry(Family::V4, NewEntry::new("manual", "192.0.2.9"))
        .unwrap();
    assert_eq!(sim.persistent_writes(), 2);
    assert_eq!(sim.stats().write_commands, 4);
}

// === faults ===

#[tokio::test]
async fn drop_after_n_sentences_applies_the_last_but_never_answers() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.faults().drop_after_sentences(Some(2));
    let mut c = Conn::admin(&server).await;
    c.send(&[
        &format!("{AL}/add"),
        "=list=l",
        "=address=192.0.2.1",
        "=timeout=1h",
    ])
    .await;
    assert!(c.closed_within(Duration::from_secs(2)).await);
    assert_eq!(sim.all_entries(Family::V4).len(), 1);
    sim.faults().drop_after_sentences(None);
    let mut c = Conn::admin(&server).await;
    assert_trap(
        &add(&mut c, "l", "192.0.2.1", Some("1h")).await,
        "failure: already have such entry",
    );
}

#[tokio::test]
async fn trap_fraction_fails_adds() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    sim.faults().trap_add_fraction(1.0);
    assert_trap(
        &add(&mut c, "l", "192.0.2.1", Some("1h")).await,
        "failure: simulated fault",
    );
    sim.faults().trap_add_fraction(0.5);
    let mut traps = 0;
    for i in 0..40 {
        let r = add(&mut c, "l", &format!("10.0.0.{i}"), Some("1h")).await;
        traps += usize::from(r[0].kind == ReplyKind::Trap);
    }
    assert!((5..35).contains(&traps), "{traps}");
    sim.faults().trap_add_fraction(0.0);
    assert_eq!(
        kinds(&add(&mut c, "l", "192.0.2.1", Some("1h")).await),
        [ReplyKind::Done]
    );
}

#[tokio::test]
async fn reboot_drops_dynamic_entries_and_connections() {
    let (sim, server) = serve(SimConfig::default().with_manual_clock()).await;
    let mut c = Conn::admin(&server).await;
    add(&mut c, "l", "192.0.2.1", Some("1h")).await;
    add(&mut c, "l", "192.0.2.2", None).await;
    sim.clock().advance(Duration::from_secs(100));
    assert_eq!(sim.uptime(), Duration::from_secs(100));
    sim.faults().reboot();
    assert!(c.closed_within(Duration::from_secs(2)).await);
    let left: Vec<String> = sim
        .all_entries(Family::V4)
        .into_iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(left, ["192.0.2.2"]);
    assert_eq!(sim.uptime(), Duration::ZERO);
    let mut c = Conn::admin(&server).await;
    let r = c
        .call(&["/system/resource/print", "=.proplist=uptime"])
        .await;
    assert_eq!(attr(&r[0], "uptime"), "0s");
    let r = add(&mut c, "l", "192.0.2.1", Some("1h")).await;
    assert_eq!(r[0].ret(), Some(&b"*3"[..]), "ids keep counting");
}

#[tokio::test]
async fn stall_holds_replies_until_released() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    sim.faults().stall(true);
    c.send(&["/system/identity/print"]).await;
    let waited = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
    assert!(waited.is_err(), "a stalled sim must not answer");
    sim.faults().stall(false);
    let r = c.until_done().await;
    assert_eq!(attr(&r[0], "name"), "MikroTik");
}

#[tokio::test]
async fn malformed_bytes_close_only_that_connection() {
    let (_sim, server) = serve(SimConfig::default()).await;
    let mut bad = Conn::open(&server).await;
    bad.send_raw(&[0xF8, 1, 2, 3]).await;
    assert!(bad.closed_within(Duration::from_secs(2)).await);
    let mut good = Conn::admin(&server).await;
    assert_eq!(
        attr(&good.call(&["/system/identity/print"]).await[0], "name"),
        "MikroTik"
    );
}

// === policies (issue 9) ===

#[tokio::test]
async fn policies_refuse_writes_and_reads() {
    let cfg = SimConfig::default()
        .add_user(User::new("ro", "pw").with_policies("api,read"))
        .add_user(User::new("wo", "pw").with_policies("api,write"))
        .add_user(User::new("noapi", "pw").with_policies("read,write"));
    let (sim, server) = serve(cfg).await;
    let mut ro = Conn::login_as(&server, "ro", "pw").await;
    assert_trap(
        &add(&mut ro, "l", "192.0.2.1", Some("1h")).await,
        "not enough permissions (9)",
    );
    assert_trap(
        &ro.call(&[&format!("{AL}/remove"), "=.id=*1"]).await,
        "not enough permissions (9)",
    );
    assert_eq!(
        kinds(&ro.call(&[&format!("{AL}/print")]).await),
        [ReplyKind::Empty, ReplyKind::Done]
    );
    let mut wo = Conn::login_as(&server, "wo", "pw").await;
    assert_eq!(
        kinds(&add(&mut wo, "l", "192.0.2.1", Some("1h")).await),
        [ReplyKind::Done]
    );
    assert_trap(
        &wo.call(&[&format!("{AL}/print")]).await,
        "not enough permissions (9)",
    );
    assert_eq!(sim.all_entries(Family::V4).len(), 1);
    let mut c = Conn::open(&server).await;
    let r = c.call(&["/login", "=name=noapi", "=password=pw"]).await;
    assert_trap(&r, "invalid user name or password (6)");
}

// === other menus ===

#[tokio::test]
async fn firewall_rules_with_counters() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    let r = c
        .call(&[
            "/ip/firewall/raw/add",
            "=chain=prerouting",
            "=action=drop",
            "=src-address-list=crowdsec",
            "=comment=tikban",
        ])
        .await;
    let id = attr(&r[0], "ret").to_owned();
    assert_eq!(sim.persistent_writes(), 1);
    let seeded = sim
        .add_rule(
            Family::V4,
            Table::Raw,
            &[("chain", "prerouting"), ("action", "accept")],
        )
        .unwrap();
    assert!(sim.set_rule_counters(&id, 1500, 10));
    let r = c
        .call(&[
            "/ip/firewall/raw/print",
            "=.proplist=.id,bytes,packets,comment,action",
            "?comment=tikban",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Re, ReplyKind::Done]);
    assert_eq!(attr(&r[0], "bytes"), "1500");
    assert_eq!(attr(&r[0], "packets"), "10");
    assert_eq!(attr(&r[0], "action"), "drop");
    // Move the seeded rule above ours.
    let r = c
        .call(&[
            "/ip/firewall/raw/move",
            &format!("=numbers={seeded}"),
            &format!("=destination={id}"),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let order: Vec<String> = sim
        .rules(Family::V4, Table::Raw)
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(order, [seeded.clone(), id.clone()]);
    let r = c
        .call(&[
            "/ip/firewall/raw/set",
            &format!("=.id={id}"),
            "=disabled=yes",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert!(sim.rules(Family::V4, Table::Raw)[1].disabled);
    let r = c
        .call(&["/ip/firewall/raw/remove", &format!("=.id={id}")])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert!(sim.rules(Family::V6, Table::Filter).is_empty());
    let r = c.call(&["/ipv6/firewall/filter/print"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Empty, ReplyKind::Done]);
}

#[tokio::test]
async fn system_resource_and_identity() {
    let cfg = SimConfig {
        identity: "edge".into(),
        architecture: "arm".into(),
        ..SimConfig::default().with_manual_clock()
    };
    let (sim, server) = serve(cfg).await;
    sim.clock().advance(Duration::from_secs(3_725));
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/system/resource/print"]).await;
    assert_eq!(attr(&r[0], "uptime"), "1h2m5s");
    assert_eq!(attr(&r[0], "version"), "7.20.1 (stable)");
    assert_eq!(attr(&r[0], "architecture-name"), "arm");
    assert!(r[0].attributes.get(".id").is_none());
    let r = c.call(&["/system/identity/print"]).await;
    assert_eq!(attr(&r[0], "name"), "edge");
}

#[tokio::test]
async fn transcript_records_both_directions_and_redacts_passwords() {
    let (sim, server) = serve(
        SimConfig::default()
            .with_user("u", "hunter2")
            .with_transcript(),
    )
    .await;
    let mut c = Conn::login_as(&server, "u", "hunter2").await;
    c.call(&["/system/identity/print"]).await;
    let t = sim.transcript();
    let text = format!("{t:?}");
    assert!(!text.contains("hunter2"));
    assert_eq!(t[0].direction, Direction::In);
    assert_eq!(t[0].words[2], b"=password=<redacted>");
    assert_eq!(t[1].direction, Direction::Out);
    assert_eq!(t[1].words, [b"!done".to_vec()]);
    assert_eq!(t.len(), 5);
}

// === cost model ===

#[tokio::test]
async fn per_write_cost_is_serialised_across_connections() {
    let cfg = SimConfig::default().with_cost(CostModel {
        per_write: Duration::from_millis(40),
        latency: Duration::ZERO,
    });
    let (_sim, server) = serve(cfg).await;
    let mut a = Conn::admin(&server).await;
    let mut b = Conn::admin(&server).await;
    let start = Instant::now();
    let (x, y) = tokio::join!(
        async {
            for i in 0..3 {
                add(&mut a, "l", &format!("10.0.0.{i}"), Some("1h")).await;
            }
        },
        async {
            for i in 0..3 {
                add(&mut b, "l", &format!("10.0.1.{i}"), Some("1h")).await;
            }
        }
    );
    let _ = (x, y);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(240),
        "6 writes × 40 ms serialised, took {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn latency_bounds_window_one_but_not_pipelining() {
    let cfg = SimConfig::default().with_cost(CostModel {
        per_write: Duration::ZERO,
        latency: Duration::from_millis(50),
    });
    let (_sim, server) = serve(cfg).await;
    let mut c = Conn::admin(&server).await;
    let start = Instant::now();
    for _ in 0..6 {
        c.call(&["/system/identity/print"]).await;
    }
    let sequential = start.elapsed();
    assert!(sequential >= Duration::from_millis(300), "{sequential:?}");

    let start = Instant::now();
    let mut buf = Vec::new();
    for i in 0..6 {
        Conn::encode(&["/system/identity/print", &format!(".tag={i}")], &mut buf);
    }
    c.send_raw(&buf).await;
    for _ in 0..12 {
        c.recv().await;
    }
    let pipelined = start.elapsed();
    assert!(pipelined < Duration::from_millis(250), "{pipelined:?}");
}

// === TLS (§8) ===

mod pinned {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{
        WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    };
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use sha2::{Digest, Sha256};

    /// Accepts exactly the certificate with this SHA-256.
    #[derive(Debug)]
    pub struct Pin(pub [u8; 32], pub WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for Pin {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if Sha256::digest(end_entity.as_ref()).as_slice() == self.0 {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("fingerprint mismatch".into()))
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(m, c, d, &self.1)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(m, c, d, &self.1)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.1.supported_schemes()
        }
    }
}

#[tokio::test]
async fn tls_handshake_with_pinned_fingerprint() {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve_tls("127.0.0.1:0").await.unwrap();
    let fp = server.fingerprint_sha256().unwrap();
    assert_eq!(server.fingerprint_hex().unwrap().len(), 64);
    assert!(
        server
            .cert_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned::Pin(fp, algs)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let sock = TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, sock).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut c = Conn::wrap(Box::new(tls));
    let r = c.call(&["/login", "=name=admin", "=password="]).await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(
        attr(&c.call(&["/system/identity/print"]).await[0], "name"),
        "MikroTik"
    );

    // A wrong pin fails the handshake.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned::Pin([0; 32], algs)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let sock = TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, sock).await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn tls_uses_a_provided_identity() {
    let identity = routeros_sim::TlsIdentity::generate().unwrap();
    let want = identity.fingerprint_sha256().unwrap();
    let cfg = SimConfig {
        tls_identity: Some(identity.clone()),
        ..SimConfig::default()
    };
    let server = Sim::new(cfg).serve_tls("127.0.0.1:0").await.unwrap();
    assert_eq!(server.fingerprint_sha256(), Some(want));
    assert_eq!(server.cert_pem(), Some(identity.cert_pem));
}
