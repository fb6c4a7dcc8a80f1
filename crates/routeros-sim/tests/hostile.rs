//! The hostile-router faults (issue 17): an endless or trickling address-list print, a session
//! killed on every print, and a desynchronised connection. Raw API sentences against a served
//! sim, as in `protocol.rs`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

mod common;

use common::*;
use routeros_proto::ReplyKind;
use routeros_sim::{DESYNC_WORD, Family, HostilePrint, NewEntry, SimConfig};
use tokio::io::AsyncReadExt;

const PRINT: &[&str] = &[
    "/ip/firewall/address-list/print",
    "=.proplist=.id,address,timeout,comment",
    "?list=blocked",
    ".tag=7",
];

#[tokio::test]
async fn an_endless_print_sends_real_rows_then_fresh_owned_rows_until_cancelled() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.insert_entry(
        Family::V4,
        NewEntry::new("blocked", "192.0.2.1").with_comment("manual"),
    )
    .unwrap();
    sim.insert_entry(Family::V4, NewEntry::new("other", "192.0.2.2"))
        .unwrap();
    sim.faults()
        .hostile_print(Some(HostilePrint::endless("tikban cscli")));
    let mut c = Conn::admin(&server).await;
    c.send(PRINT).await;

    let first = c.recv().await;
    assert_eq!(first.kind, ReplyKind::Re);
    assert_eq!(
        attr(&first, "address"),
        "192.0.2.1",
        "the real row comes first"
    );
    let (mut ids, mut addresses) = (HashSet::new(), HashSet::new());
    for _ in 0..3000 {
        let r = c.recv().await;
        assert_eq!(r.kind, ReplyKind::Re, "never !done: {r:?}");
        assert_eq!(r.tag_str(), Some("7"));
        assert_eq!(attr(&r, "comment"), "tikban cscli");
        assert_eq!(attr(&r, "timeout"), "1d");
        assert!(r.attributes.get("list").is_none(), "the proplist applies");
        assert!(ids.insert(attr(&r, ".id").to_owned()), "fresh ids");
        let address = attr(&r, "address").to_owned();
        assert!(address.starts_with("100."), "{address}");
        assert!(addresses.insert(address), "fresh addresses");
    }
    assert!(
        sim.faults().hostile_rows_sent() >= 3000,
        "the counter shows the fault was exercised"
    );

    c.send(&["/cancel", "=tag=7", ".tag=8"]).await;
    // Rows already on their way, then the cancelled command's end (§5).
    let mut tail = Vec::new();
    loop {
        let r = c.recv().await;
        if r.kind != ReplyKind::Re {
            tail.push((r.kind, r.tag_str().map(str::to_owned)));
        }
        if r.kind == ReplyKind::Done && r.tag_str() == Some("7") {
            break;
        }
    }
    assert_eq!(
        tail,
        [
            (ReplyKind::Trap, Some("7".to_owned())),
            (ReplyKind::Done, Some("8".to_owned())),
            (ReplyKind::Done, Some("7".to_owned())),
        ]
    );
    // The connection still works; with the fault off a print ends again.
    sim.faults().hostile_print(None);
    let r = c
        .call(&["/ip/firewall/address-list/print", "?list=blocked"])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Re, ReplyKind::Done]);
}

/// Rows of the IPv6 list are IPv6 addresses, shown with their prefix as RouterOS shows them.
#[tokio::test]
async fn an_endless_ipv6_print_invents_ipv6_rows() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.faults()
        .hostile_print(Some(HostilePrint::endless("tikban cscli")));
    let mut c = Conn::admin(&server).await;
    c.send(&["/ipv6/firewall/address-list/print", "?list=blocked6"])
        .await;
    for _ in 0..300 {
        let r = c.recv().await;
        assert_eq!(r.kind, ReplyKind::Re);
        assert_eq!(attr(&r, "list"), "blocked6", "the list the print asked for");
        let address = attr(&r, "address");
        assert!(
            address.starts_with("2001:db8:ffff::") && address.ends_with("/128"),
            "{address}"
        );
    }
}

#[tokio::test]
async fn a_trickling_print_sends_one_row_per_interval() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.faults().hostile_print(Some(HostilePrint::trickle(
        "tikban cscli",
        Duration::from_millis(200),
    )));
    let mut c = Conn::admin(&server).await;
    let started = Instant::now();
    c.send(PRINT).await;
    for _ in 0..4 {
        let r = c.recv().await;
        assert_eq!(r.kind, ReplyKind::Re, "{r:?}");
    }
    // The first row at once, then one every 200 ms.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(sim.faults().hostile_rows_sent(), 4);
}

#[tokio::test]
async fn kill_on_print_drops_the_session_unanswered() {
    let (sim, server) = serve(SimConfig::default().with_transcript()).await;
    sim.faults().kill_on_print(true);
    let mut c = Conn::admin(&server).await;
    // Other commands are answered.
    let r = c
        .call(&[
            "/ip/firewall/address-list/add",
            "=list=l",
            "=address=192.0.2.9",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    c.send(&["/system/resource/print"]).await;
    assert!(c.closed_within(Duration::from_secs(2)).await);
    assert_eq!(sim.faults().print_kills(), 1);
    assert_eq!(
        sim.stats().commands.get("/system/resource/print"),
        None,
        "the print was not executed"
    );
    let messages: Vec<String> = sim.logs().into_iter().map(|l| l.message).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("user admin logged out")),
        "{messages:?}"
    );

    sim.faults().kill_on_print(false);
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/system/resource/print"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Re, ReplyKind::Done]);
    assert_eq!(sim.faults().print_kills(), 1);
}

#[tokio::test]
async fn desync_opens_a_word_then_goes_silent_but_keeps_executing() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    sim.faults().desync();
    // The prefix of a DESYNC_WORD-byte word: three bytes (`docs/reference/routeros-api.md` §1.1).
    let mut expected = Vec::new();
    routeros_proto::length::encode_len(DESYNC_WORD, &mut expected);
    assert_eq!(expected.len(), 3);
    let mut got = vec![0u8; 3];
    tokio::time::timeout(WAIT, c.io.read_exact(&mut got))
        .await
        .expect("the desync bytes arrive")
        .unwrap();
    assert_eq!(got, expected);
    assert_eq!(sim.faults().desynced_connections(), 1);

    // Commands still run, but nothing comes back.
    c.send(&[
        "/ip/firewall/address-list/add",
        "=list=l",
        "=address=192.0.2.7",
    ])
    .await;
    let deadline = Instant::now() + WAIT;
    while sim.address_list(Family::V4, "l").is_empty() {
        assert!(Instant::now() < deadline, "the add was not executed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Proof of progress above (the add ran); its reply never comes.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), c.io.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "a desynchronised connection stays silent: {read:?}"
    );

    // A new connection is not affected.
    let mut fresh = Conn::admin(&server).await;
    let r = fresh
        .call(&["/ip/firewall/address-list/print", "?list=l"])
        .await;
    assert_eq!(attr(&r[0], "address"), "192.0.2.7");
    assert_eq!(sim.faults().desynced_connections(), 1);
}
