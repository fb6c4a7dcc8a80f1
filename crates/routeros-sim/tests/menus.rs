//! Socket tests of the menus tikban's guard reads: `/log`, `/user/active`, `/system/resource`,
//! and `listen`. Section numbers refer to `docs/reference/routeros-api.md`.

mod common;

use std::time::Duration;

use common::*;
use routeros_proto::ReplyKind;
use routeros_sim::{Family, LogTimeFormat, NewEntry, NewLogEntry, SimConfig, Table, User};

const FAILURE: &str = "system,error,critical";
const ACCOUNT: &str = "system,info,account";

/// `(topics, message)` of every `!re`.
fn rows(replies: &[routeros_proto::Reply]) -> Vec<(String, String)> {
    replies
        .iter()
        .filter(|r| r.kind == ReplyKind::Re)
        .map(|r| (attr(r, "topics").to_owned(), attr(r, "message").to_owned()))
        .collect()
}

// === /log ===

#[tokio::test]
async fn log_print_shows_the_sims_own_login_failures_logins_and_fields() {
    let (_sim, server) = serve(SimConfig::default().with_user("tikban", "pw")).await;
    let mut bad = Conn::open(&server).await;
    let r = bad
        .call(&["/login", "=name=tikban", "=password=nope"])
        .await;
    assert_trap(&r, "invalid user name or password (6)");
    let mut c = Conn::login_as(&server, "tikban", "pw").await;
    let r = c.call(&["/log/print"]).await;
    assert_eq!(
        rows(&r),
        [
            (
                FAILURE.to_owned(),
                "login failure for user tikban from 127.0.0.1 via api".to_owned()
            ),
            (
                ACCOUNT.to_owned(),
                "user tikban logged in from 127.0.0.1 via api".to_owned()
            ),
        ]
    );
    // Field names and order of the recorded rows (7.19+: extra-info after message; no buffer
    // before 7.21).
    assert_eq!(
        keys(&r[0]),
        [".id", "time", "topics", "message", "extra-info"]
    );
    assert_eq!(
        attr(&r[0], "extra-info"),
        "app=api duser=tikban outcome=failure src=127.0.0.1"
    );
    assert_eq!(
        attr(&r[1], "extra-info"),
        "app=api duser=tikban outcome=success src=127.0.0.1"
    );
    // `.id`s increase; 7.20 prints the full date even for today's entries.
    assert_eq!((attr(&r[0], ".id"), attr(&r[1], ".id")), ("*1", "*2"));
    assert!(is_iso_date_time(attr(&r[0], "time")), "{r:?}");
}

#[tokio::test]
async fn log_user_name_is_taken_verbatim_from_the_client() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::open(&server).await;
    let r = c
        .call(&["/login", "=name=user with space from", "=password=x"])
        .await;
    assert_trap(&r, "invalid user name or password (6)");
    let logs = sim.logs();
    assert_eq!(
        logs[0].message,
        "login failure for user user with space from from 127.0.0.1 via api"
    );
    assert_eq!(logs[0].topics, FAILURE);
}

#[tokio::test]
async fn follow_only_streams_new_entries_until_cancel() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.log("system,info", "before the stream");
    let mut c = Conn::admin(&server).await;
    c.send(&["/log/print", "=follow-only=", ".tag=g"]).await;
    c.sync().await;
    // Nothing old is sent: the first row is the one logged after the stream started.
    sim.log(
        FAILURE,
        "login failure for user admin from 192.0.2.7 via ssh",
    );
    let r = c.recv().await;
    assert_eq!((r.kind, r.tag_str()), (ReplyKind::Re, Some("g")));
    assert_eq!(
        attr(&r, "message"),
        "login failure for user admin from 192.0.2.7 via ssh"
    );
    // The sim's own events stream too.
    let mut bad = Conn::open(&server).await;
    bad.call(&["/login", "=name=root", "=password=x"]).await;
    let r = c.recv().await;
    assert_eq!(
        attr(&r, "message"),
        "login failure for user root from 127.0.0.1 via api"
    );

    c.send(&["/cancel", "=tag=g", ".tag=c"]).await;
    let mut ends = Vec::new();
    while ends.len() < 4 {
        let r = c.recv().await;
        ends.push((r.kind, r.tag_str().map(str::to_owned), r.category()));
    }
    let g: Vec<_> = ends
        .iter()
        .filter(|e| e.1.as_deref() == Some("g"))
        .collect();
    // §3: after /cancel a stream sends `!trap =category=2 =message=interrupted`, `!empty`
    // (7.18+), `!done`.
    assert_eq!(
        g.iter().map(|e| (e.0, e.2)).collect::<Vec<_>>(),
        [
            (ReplyKind::Trap, Some(2)),
            (ReplyKind::Empty, None),
            (ReplyKind::Done, None)
        ]
    );
}

#[tokio::test]
async fn follow_sends_existing_entries_then_new_ones_with_queries_and_proplist() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.log("dhcp,info", "defconf assigned 192.168.88.20");
    sim.log(
        FAILURE,
        "login failure for user guest from 192.0.2.9 via winbox",
    );
    let mut c = Conn::admin(&server).await;
    c.send(&[
        "/log/print",
        "=follow=",
        "?topics=system,error,critical",
        "=.proplist=message",
        ".tag=f",
    ])
    .await;
    let r = c.recv().await;
    assert_eq!(
        words(&r),
        [
            "!re",
            "=message=login failure for user guest from 192.0.2.9 via winbox",
            ".tag=f"
        ]
    );
    sim.log("dhcp,info", "not matched");
    sim.log(
        FAILURE,
        "login failure for user admin from 192.0.2.9 via ssh",
    );
    let r = c.recv().await;
    assert_eq!(
        attr(&r, "message"),
        "login failure for user admin from 192.0.2.9 via ssh"
    );
}

#[tokio::test]
async fn log_print_one_shot_takes_queries_count_only_and_display_flags() {
    let (sim, server) = serve(SimConfig::default()).await;
    sim.log(FAILURE, "login failure for user a from 192.0.2.1 via ssh");
    sim.log("firewall,info", "input: in:ether1 out:(unknown 0)");
    let mut c = Conn::admin(&server).await;
    let r = c
        .call(&["/log/print", "?topics=firewall,info", "=without-paging="])
        .await;
    assert_eq!(
        rows(&r),
        [(
            "firewall,info".to_owned(),
            "input: in:ether1 out:(unknown 0)".to_owned()
        )]
    );
    let r = c.call(&["/log/print", "=count-only="]).await;
    // The two injected lines and admin's login.
    assert_eq!(attr(&r[0], "ret"), "3");
    let r = c.call(&["/log/print", "?topics=none"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Empty, ReplyKind::Done]);
}

#[tokio::test]
async fn logout_is_logged_when_a_logged_in_connection_ends() {
    let (_sim, server) = serve(SimConfig::default().with_user("tikban", "pw")).await;
    let mut watch = Conn::login_as(&server, "tikban", "pw").await;
    watch
        .send(&[
            "/log/print",
            "=follow-only=",
            "?topics=system,info,account",
            ".tag=w",
        ])
        .await;
    watch.sync().await;
    let c = Conn::login_as(&server, "tikban", "pw").await;
    let r = watch.recv().await;
    assert_eq!(
        attr(&r, "message"),
        "user tikban logged in from 127.0.0.1 via api"
    );
    drop(c);
    // The close is the signal; the stream delivers the logout within the receive deadline.
    let r = watch.recv().await;
    assert_eq!(
        attr(&r, "message"),
        "user tikban logged out from 127.0.0.1 via api"
    );
}

#[tokio::test]
async fn memory_log_keeps_the_newest_1000_entries_by_default() {
    let (sim, server) = serve(SimConfig::default()).await;
    for i in 0..1_100 {
        sim.log("script,info", &format!("line {i}"));
    }
    let logs = sim.logs();
    assert_eq!(logs.len(), 1_000);
    assert_eq!(logs[0].message, "line 100");
    assert_eq!(logs[0].id, "*65");
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/log/print", "=count-only="]).await;
    assert_eq!(attr(&r[0], "ret"), "1000", "admin's login pushed one out");
    assert_eq!(sim.logs()[0].message, "line 101");
}

#[tokio::test]
async fn log_print_needs_the_read_policy() {
    let cfg = SimConfig::default().add_user(User::new("apionly", "pw").with_policies("api"));
    let (_sim, server) = serve(cfg).await;
    let mut c = Conn::login_as(&server, "apionly", "pw").await;
    assert_trap(&c.call(&["/log/print"]).await, "not enough permissions (9)");
}

#[tokio::test]
async fn with_extra_info_exists_from_7_19() {
    let (sim, server) = serve(SimConfig::default().with_version("7.18.2")).await;
    sim.push_log(
        NewLogEntry::new(FAILURE, "login failure for user a from 192.0.2.1 via ssh")
            .with_extra_info("app=ssh duser=a outcome=failure src=192.0.2.1"),
    );
    let mut c = Conn::admin(&server).await;
    assert_trap(
        &c.call(&["/log/print", "=with-extra-info="]).await,
        "unknown parameter with-extra-info",
    );
    let r = c.call(&["/log/print"]).await;
    assert_eq!(keys(&r[0]), [".id", "time", "topics", "message"]);

    let (sim, server) = serve(SimConfig::default().with_version("7.19")).await;
    sim.push_log(
        NewLogEntry::new(FAILURE, "login failure for user a from 192.0.2.1 via ssh")
            .with_extra_info("app=ssh duser=a outcome=failure src=192.0.2.1"),
    );
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/log/print", "=with-extra-info="]).await;
    assert_eq!(
        attr(&r[0], "extra-info"),
        "app=ssh duser=a outcome=failure src=192.0.2.1"
    );
}

#[tokio::test]
async fn log_time_styles_follow_version_and_config() {
    let is_clock = |s: &str| s.len() == 8 && s.as_bytes()[2] == b':' && s.as_bytes()[5] == b':';
    // Relative: today's entries print as the time only; 40 days later they carry a date.
    let cfg = SimConfig {
        log_time: LogTimeFormat::Relative,
        ..SimConfig::default().with_manual_clock()
    };
    let (sim, server) = serve(cfg).await;
    sim.log("script,info", "x");
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/log/print", "=.proplist=time"]).await;
    let t = attr(&r[0], "time").to_owned();
    // A run across midnight would print `MM-DD HH:MM:SS`; both are relative forms.
    assert!(is_clock(&t) || t.len() == 14, "{t}");
    sim.clock().advance(Duration::from_secs(40 * 86_400));
    let r = c.call(&["/log/print", "=.proplist=time"]).await;
    let later = attr(&r[0], "time");
    assert!(
        later.ends_with(&t[t.len() - 8..]) && later.len() > 8,
        "{later}"
    );

    // Before 7.10 dates are `jun/14/2022`-style, and the default is relative.
    let (sim, server) = serve(
        SimConfig::default()
            .with_version("7.9.2")
            .with_manual_clock(),
    )
    .await;
    sim.log("script,info", "x");
    sim.clock().advance(Duration::from_secs(400 * 86_400));
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/log/print", "?message=x"]).await;
    let t = attr(&r[0], "time");
    let b = t.as_bytes();
    assert!(
        t.len() == 20 && b[3] == b'/' && b[6] == b'/' && b[0].is_ascii_lowercase(),
        "{t}"
    );
}

#[tokio::test]
async fn reboot_empties_the_memory_log_without_logging_logouts() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    sim.log("script,info", "x");
    sim.faults().reboot();
    assert!(c.closed_within(Duration::from_secs(2)).await);
    let mut c = Conn::admin(&server).await;
    let r = c.call(&["/log/print"]).await;
    assert_eq!(
        rows(&r),
        [(
            ACCOUNT.to_owned(),
            "user admin logged in from 127.0.0.1 via api".to_owned()
        )]
    );
}

// === /user/active ===

#[tokio::test]
async fn user_active_lists_api_sessions_and_sessions_tests_add() {
    let cfg = SimConfig::default()
        .with_user("tikban", "pw")
        .add_user(User::new("watcher", "pw").with_group("read-only"));
    let (sim, server) = serve(cfg).await;
    let mut c = Conn::login_as(&server, "tikban", "pw").await;
    let winbox = sim
        .add_active_session("admin", "192.0.2.10", "winbox")
        .unwrap();
    let r = c.call(&["/user/active/print"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Re, ReplyKind::Re, ReplyKind::Done]);
    assert_eq!(
        keys(&r[0]),
        [".id", "when", "name", "address", "via", "group", "radius"]
    );
    let row = |r: &routeros_proto::Reply| {
        ["name", "address", "via", "group", "radius"].map(|k| attr(r, k).to_owned())
    };
    assert_eq!(row(&r[0]), ["tikban", "127.0.0.1", "api", "full", "false"]);
    assert_eq!(
        row(&r[1]),
        ["admin", "192.0.2.10", "winbox", "full", "false"]
    );
    assert_eq!(attr(&r[1], ".id"), winbox);
    assert!(is_iso_date_time(attr(&r[0], "when")), "{r:?}");
    // Adding and removing a session logs the login and logout, as a router would.
    assert!(sim.remove_active_session(&winbox));
    assert!(!sim.remove_active_session(&winbox));
    let messages: Vec<String> = sim.logs().into_iter().map(|l| l.message).collect();
    assert!(messages.ends_with(&[
        "user admin logged in from 192.0.2.10 via winbox".to_owned(),
        "user admin logged out from 192.0.2.10 via winbox".to_owned(),
    ]));

    // A second API session shows its user's group; its end removes its row (a `.dead` row on a
    // follow-only stream is the signal).
    c.send(&["/user/active/print", "=follow-only=", ".tag=u"])
        .await;
    c.sync().await;
    let w = Conn::login_as(&server, "watcher", "pw").await;
    let r = c.recv().await;
    assert_eq!(
        (attr(&r, "name"), attr(&r, "group"), attr(&r, "via")),
        ("watcher", "read-only", "api")
    );
    let id = attr(&r, ".id").to_owned();
    drop(w);
    let r = c.recv().await;
    assert_eq!((attr(&r, ".id"), attr(&r, ".dead")), (id.as_str(), "true"));
    assert_eq!(sim.active_sessions().len(), 1);
}

#[tokio::test]
async fn user_active_print_needs_read_and_has_only_print() {
    let cfg = SimConfig::default().add_user(User::new("apionly", "pw").with_policies("api"));
    let (_sim, server) = serve(cfg).await;
    let mut c = Conn::admin(&server).await;
    assert_trap(
        &c.call(&["/user/active/request-logout", "=numbers=*1"])
            .await,
        "no such command",
    );
    let mut c = Conn::login_as(&server, "apionly", "pw").await;
    assert_trap(
        &c.call(&["/user/active/print"]).await,
        "not enough permissions (9)",
    );
}

// === /system/resource ===

#[tokio::test]
async fn system_resource_memory_is_in_bytes_and_settable() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut c = Conn::admin(&server).await;
    let q = [
        "/system/resource/print",
        "=.proplist=total-memory,free-memory,uptime",
    ];
    let r = c.call(&q).await;
    assert_eq!(
        (attr(&r[0], "total-memory"), attr(&r[0], "free-memory")),
        ("1073741824", "805306368")
    );
    sim.set_memory(268_435_456, 1_048_576);
    let r = c.call(&q).await;
    assert_eq!(
        (attr(&r[0], "total-memory"), attr(&r[0], "free-memory")),
        ("268435456", "1048576")
    );
    // The other fields stay.
    assert!(r[0].attributes.get_str("uptime").is_some());
    sim.set_memory(100, 200);
    let r = c.call(&q).await;
    assert_eq!(
        attr(&r[0], "free-memory"),
        "100",
        "free never exceeds total"
    );
}

// === listen (§5) ===

#[tokio::test]
async fn listen_on_an_address_list_streams_adds_changes_and_deletions() {
    let (sim, server) = serve(SimConfig::default().with_manual_clock()).await;
    sim.insert_entry(Family::V4, NewEntry::new("old", "192.0.2.99"))
        .unwrap();
    let mut l = Conn::admin(&server).await;
    l.send(&[&format!("{AL}/listen"), ".tag=10"]).await;
    l.sync().await;
    let mut c = Conn::admin(&server).await;
    let r = c
        .call(&[
            &format!("{AL}/add"),
            "=list=l",
            "=address=192.0.2.1",
            "=timeout=1h",
        ])
        .await;
    let id = attr(&r[0], "ret").to_owned();
    // Only the change: the entry that existed before is not sent.
    let r = l.recv().await;
    assert_eq!((r.kind, r.tag_str()), (ReplyKind::Re, Some("10")));
    assert_eq!(
        (attr(&r, ".id"), attr(&r, "list"), attr(&r, "address")),
        (id.as_str(), "l", "192.0.2.1")
    );
    c.call(&[&format!("{AL}/set"), &format!("=.id={id}"), "=comment=x"])
        .await;
    let r = l.recv().await;
    assert_eq!((attr(&r, ".id"), attr(&r, "comment")), (id.as_str(), "x"));
    // Expiry is a deletion too, noticed when the clock moves (no other change needed).
    sim.clock().advance(Duration::from_secs(3_601));
    let r = l.recv().await;
    assert_eq!(
        words(&r),
        ["!re", &format!("=.id={id}"), "=.dead=true", ".tag=10"]
    );
    c.call(&[&format!("{AL}/remove"), "=.id=*1"]).await;
    let r = l.recv().await;
    assert_eq!((attr(&r, ".id"), attr(&r, ".dead")), ("*1", "true"));

    l.send(&["/cancel", "=tag=10", ".tag=20"]).await;
    let mut tagged = Vec::new();
    while tagged.len() < 3 {
        let r = l.recv().await;
        if r.tag_str() == Some("10") {
            tagged.push((r.kind, r.category()));
        }
    }
    assert_eq!(
        tagged,
        [
            (ReplyKind::Trap, Some(2)),
            (ReplyKind::Empty, None),
            (ReplyKind::Done, None)
        ]
    );
}

#[tokio::test]
async fn listen_works_on_rules_scripts_and_user_active_and_refuses_unknown_args() {
    let (sim, server) = serve(SimConfig::default()).await;
    let mut l = Conn::admin(&server).await;
    l.send(&["/ip/firewall/raw/listen", ".tag=r"]).await;
    l.send(&["/system/script/listen", ".tag=s"]).await;
    l.send(&["/user/active/listen", "=.proplist=name,via", ".tag=u"])
        .await;
    l.sync().await;
    let rule = sim
        .add_rule(
            Family::V4,
            Table::Raw,
            &[("chain", "prerouting"), ("action", "drop")],
        )
        .unwrap();
    let r = l.recv().await;
    assert_eq!((r.tag_str(), attr(&r, ".id")), (Some("r"), rule.as_str()));
    // Counters moving alone is not a change.
    assert!(sim.set_rule_counters(&rule, 10, 1));
    sim.add_active_session("admin", "192.0.2.10", "winbox")
        .unwrap();
    let r = l.recv().await;
    assert_eq!(words(&r), ["!re", "=name=admin", "=via=winbox", ".tag=u"]);
    let mut c = Conn::admin(&server).await;
    let r = l.recv().await;
    assert_eq!((r.tag_str(), attr(&r, "via")), (Some("u"), "api"));
    c.call(&["/system/script/add", "=name=bulk", "=source=:put 1"])
        .await;
    let r = l.recv().await;
    assert_eq!((r.tag_str(), attr(&r, "name")), (Some("s"), "bulk"));

    assert_trap(
        &c.call(&[&format!("{AL}/listen"), "=follow="]).await,
        "unknown parameter follow",
    );
    assert_trap(
        &c.call(&["/system/resource/listen"]).await,
        "no such command",
    );
}

// === bare /login (§4) ===

#[tokio::test]
async fn bare_login_gets_a_challenge_on_6_43_and_later_whose_answer_fails_from_6_45_1() {
    for (version, answer_logs_in) in [("6.44.6", true), ("6.47.6", false), ("7.20.1", false)] {
        let (_sim, server) = serve(
            SimConfig::default()
                .with_user("admin", "pw")
                .with_version(version),
        )
        .await;
        let mut c = Conn::open(&server).await;
        let r = c.call(&["/login"]).await;
        assert_eq!(kinds(&r), [ReplyKind::Done], "{version}");
        let challenge = attr(&r[0], "ret").to_owned();
        assert_eq!(challenge.len(), 32, "{version}");
        assert!(challenge.bytes().all(|b| b.is_ascii_hexdigit()));
        let response = routeros_proto::login::legacy_response(challenge.as_bytes(), b"pw").unwrap();
        let r = c
            .call(&["/login", "=name=admin", &format!("=response={response}")])
            .await;
        if answer_logs_in {
            assert_eq!(kinds(&r), [ReplyKind::Done], "{version}");
        } else {
            assert_trap(&r, "invalid user name or password (6)");
            assert!(c.closed_within(Duration::from_secs(2)).await);
        }
        // The plain login works whatever came before it.
        let mut c = Conn::open(&server).await;
        c.call(&["/login"]).await;
        let r = c.call(&["/login", "=name=admin", "=password=pw"]).await;
        assert_eq!(kinds(&r), [ReplyKind::Done], "{version}");
    }
}
