//! Client ↔ `routeros-sim` (the RouterOS emulator) over real sockets on 127.0.0.1.

use std::time::{Duration, Instant};

use routeros_client::{
    Client, ClientConfig, Command, ConnectError, Error, LostReason, Query, TlsConfig, TlsTrust,
    format_fingerprint,
};
use routeros_sim::{CostModel, Family, NewEntry, RunningSim, Sim, SimConfig};

const USER: &str = "tikban";
const PASSWORD: &str = "s3cret-pw";
const LIST: &str = "crowdsec-banned";

fn sim_config() -> SimConfig {
    SimConfig::default().with_user(USER, PASSWORD)
}

async fn serve(config: SimConfig) -> (Sim, RunningSim) {
    let sim = Sim::new(config);
    let running = sim.serve("127.0.0.1:0").await.unwrap();
    (sim, running)
}

fn client_config(running: &RunningSim) -> ClientConfig {
    let mut c = ClientConfig::new("127.0.0.1", USER, PASSWORD);
    c.port = running.addr().port();
    c.connect_timeout = Duration::from_secs(5);
    c.command_timeout = Duration::from_secs(10);
    c
}

fn add(address: &str) -> Command {
    Command::builder("/ip/firewall/address-list/add")
        .attr("list", LIST)
        .attr("address", address)
        .attr("timeout", "3600s")
        .build()
        .unwrap()
}

fn print_list() -> Command {
    Command::builder("/ip/firewall/address-list/print")
        .proplist(&[".id", "address", "timeout"])
        .query(Query::Eq("list".into(), LIST.as_bytes().to_vec()))
        .build()
        .unwrap()
}

fn addr_of(i: u32) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

#[tokio::test]
async fn login_ok_and_bad_credentials() {
    let (_sim, running) = serve(sim_config()).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    let identity = client
        .execute(Command::builder("/system/identity/print").build().unwrap())
        .await
        .unwrap();
    assert_eq!(identity.rows[0].get_str("name"), Some("MikroTik"));
    client.quit().await.unwrap();

    let mut bad = client_config(&running);
    bad.password = "wrong-pw".into();
    let err = Client::connect(bad).await.unwrap_err();
    match &err {
        ConnectError::LoginFailed { message } => {
            assert_eq!(message, "invalid user name or password (6)")
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("wrong-pw"));
}

#[tokio::test]
async fn a_tcp_client_knows_both_ends_of_its_connection() {
    let (_sim, running) = serve(sim_config()).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    assert_eq!(client.peer_addr(), Some(running.addr()));
    let local = client
        .local_addr()
        .expect("a TCP connection has a local address");
    assert!(local.ip().is_loopback() && local.port() != 0, "{local}");
}

#[tokio::test]
async fn legacy_challenge_login_on_a_pre_643_router() {
    let (_sim, running) = serve(sim_config().with_version("6.42.12")).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    client.execute(add("192.0.2.9")).await.unwrap();
    let mut bad = client_config(&running);
    bad.password = "nope".into();
    assert!(matches!(
        Client::connect(bad).await,
        Err(ConnectError::LoginFailed { .. })
    ));
}

#[tokio::test]
async fn add_print_remove_and_empty_print() {
    let (sim, running) = serve(sim_config()).await;
    let client = Client::connect(client_config(&running)).await.unwrap();

    let id = client
        .execute(add("192.0.2.1/32"))
        .await
        .unwrap()
        .ret_str()
        .unwrap()
        .to_owned();
    let rows = client.execute(print_list()).await.unwrap().rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get_str(".id"), Some(id.as_str()));
    assert_eq!(rows[0].get_str("address"), Some("192.0.2.1"));
    assert_eq!(sim.address_list(Family::V4, LIST).len(), 1);

    client
        .execute(
            Command::builder("/ip/firewall/address-list/remove")
                .attr("numbers", &id)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    // 7.20 answers an empty print with `!empty` then `!done` (docs/reference/routeros-api.md §3).
    let empty = client.execute(print_list()).await.unwrap();
    assert!(empty.rows.is_empty());
    assert!(sim.address_list(Family::V4, LIST).is_empty());
    client.quit().await.unwrap();
}

#[tokio::test]
async fn empty_print_on_a_router_without_empty_reply() {
    let (_sim, running) = serve(sim_config().with_version("7.16")).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    assert!(client.execute(print_list()).await.unwrap().rows.is_empty());
}

#[tokio::test]
async fn duplicate_add_traps_and_the_connection_stays_up() {
    let (sim, running) = serve(sim_config()).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    client.execute(add("198.51.100.7")).await.unwrap();
    match client.execute(add("198.51.100.7")).await {
        Err(Error::Trap { message, .. }) => {
            assert_eq!(message, "failure: already have such entry")
        }
        other => panic!("{other:?}"),
    }
    assert!(!client.is_closed());
    client.execute(add("198.51.100.8")).await.unwrap();
    assert_eq!(sim.address_list(Family::V4, LIST).len(), 2);
}

#[tokio::test]
async fn traps_inside_a_pipeline_fail_only_their_command() {
    let (sim, running) = serve(sim_config()).await;
    sim.faults().trap_add_fraction(0.3);
    let client = Client::connect(client_config(&running)).await.unwrap();
    let results = client.pipeline((0..500).map(|i| add(&addr_of(i)))).await;
    let trapped = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Trap { message, .. }) if message == "failure: simulated fault"))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok + trapped, 500);
    assert!(trapped > 50 && ok > 200, "trapped {trapped}, ok {ok}");
    assert_eq!(sim.address_list(Family::V4, LIST).len(), ok);
    assert!(!client.is_closed());
}

/// The acceptance test for pipelining: 10k adds with a window of 64 against a sim with 1 ms of
/// per-command latency, compared with window = 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_adds_overlap_the_latency() {
    const N: u32 = 10_000;
    const SERIAL_N: u32 = 300;
    let cost = CostModel {
        per_write: Duration::ZERO,
        latency: Duration::from_millis(1),
    };
    let (sim, running) = serve(sim_config().with_cost(cost)).await;

    let mut config = client_config(&running);
    config.window = 64;
    let client = Client::connect(config.clone()).await.unwrap();
    let started = Instant::now();
    let results = client.pipeline((0..N).map(|i| add(&addr_of(i)))).await;
    let pipelined = started.elapsed();
    let mut ids = std::collections::HashSet::new();
    for r in &results {
        ids.insert(r.as_ref().unwrap().ret_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), N as usize, "every add got its own .id back");
    assert_eq!(sim.address_list(Family::V4, LIST).len(), N as usize);
    client.quit().await.unwrap();

    // Window 1 on fewer commands (it is latency-bound by construction); compare per command.
    config.window = 1;
    let serial = Client::connect(config).await.unwrap();
    let started = Instant::now();
    for r in serial
        .pipeline((N..N + SERIAL_N).map(|i| add(&addr_of(i))))
        .await
    {
        r.unwrap();
    }
    let serial_elapsed = started.elapsed();
    serial.quit().await.unwrap();

    let per_pipelined = pipelined.as_secs_f64() / f64::from(N);
    let per_serial = serial_elapsed.as_secs_f64() / f64::from(SERIAL_N);
    let ratio = per_serial / per_pipelined;
    eprintln!(
        "pipelining: {N} adds with window 64 in {pipelined:.2?} ({:.0}/s); {SERIAL_N} adds with \
         window 1 in {serial_elapsed:.2?} ({:.0}/s); speed-up {ratio:.1}x at 1 ms latency",
        1.0 / per_pipelined,
        1.0 / per_serial,
    );
    assert!(
        ratio > 3.0,
        "window 64 is only {ratio:.1}x faster than window 1"
    );
}

#[tokio::test]
async fn stall_gives_timeout_and_the_connection_works_afterwards() {
    let (sim, running) = serve(sim_config()).await;
    let mut config = client_config(&running);
    config.command_timeout = Duration::from_millis(300);
    config.window = 2;
    let client = Client::connect(config).await.unwrap();

    sim.faults().stall(true);
    let started = Instant::now();
    match client.execute(add("203.0.113.1")).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!client.is_closed());
    sim.faults().stall(false);

    let r = client.execute(add("203.0.113.2")).await.unwrap();
    assert!(r.ret().is_some());
    let rows = client.execute(print_list()).await.unwrap().rows;
    assert!(
        rows.iter()
            .any(|r| r.get_str("address") == Some("203.0.113.2"))
    );
    assert!(!client.is_closed());
}

#[tokio::test]
async fn dropped_connection_is_connection_lost() {
    let (sim, running) = serve(sim_config()).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    client.execute(add("192.0.2.50")).await.unwrap();
    sim.faults().kill_connections();
    let err = client.execute(add("192.0.2.51")).await.unwrap_err();
    assert!(err.is_connection_lost(), "{err:?}");
    assert!(client.is_closed());
    // A caller reconnects on that error.
    let again = Client::connect(client_config(&running)).await.unwrap();
    again.execute(add("192.0.2.51")).await.unwrap();
}

#[tokio::test]
async fn drop_after_sentences_fails_pending_pipelined_commands() {
    let (sim, running) = serve(sim_config()).await;
    // Login is sentence 1; the connection dies while the 6th add is processed.
    sim.faults().drop_after_sentences(Some(7));
    let client = Client::connect(client_config(&running)).await.unwrap();
    let results = client.pipeline((0..20).map(|i| add(&addr_of(i)))).await;
    let lost = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_connection_lost()))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok <= 6 && lost >= 14, "ok {ok}, lost {lost}");
    assert_eq!(ok + lost, 20);
    assert!(client.is_closed());
}

#[tokio::test]
async fn quit_closes_cleanly() {
    let (_sim, running) = serve(sim_config()).await;
    let client = Client::connect(client_config(&running)).await.unwrap();
    client.quit().await.unwrap();
    assert!(client.is_closed());
    match client.execute(print_list()).await {
        Err(Error::ConnectionLost {
            reason: LostReason::Closed,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn streaming_print_of_many_rows_and_cancel() {
    const ROWS: u32 = 20_000;
    let (sim, running) = serve(sim_config()).await;
    for i in 0..ROWS {
        sim.insert_entry(
            Family::V4,
            NewEntry::new(LIST, &addr_of(i)).with_timeout(Duration::from_secs(3600)),
        )
        .unwrap();
    }
    let mut config = client_config(&running);
    config.stream_buffer = 64;
    let client = Client::connect(config).await.unwrap();

    // Whole list, row by row.
    let mut rows = client.stream(print_list()).await.unwrap();
    let mut n = 0;
    while let Some(row) = rows.next().await {
        assert!(row.unwrap().get(".id").is_some());
        n += 1;
    }
    assert_eq!(n, ROWS);
    assert!(rows.done().is_some());

    // Stop a big print after a few rows: the rest is cancelled and dropped.
    let mut rows = client.stream(print_list()).await.unwrap();
    for _ in 0..100 {
        rows.next().await.unwrap().unwrap();
    }
    rows.cancel().await.unwrap();

    // `=follow=` never ends by itself (docs/reference/routeros-api.md §6): cancel ends it.
    let follow = Command::builder("/ip/firewall/address-list/print")
        .flag("follow")
        .query(Query::Eq("list".into(), b"other".to_vec()))
        .build()
        .unwrap();
    sim.insert_entry(Family::V4, NewEntry::new("other", "192.0.2.199"))
        .unwrap();
    let mut live = client.stream(follow).await.unwrap();
    // The snapshot row shows the stream is running before the change is made. (The sim
    // subscribes to changes only after sending the snapshot, so a change made before that is
    // missed.)
    let snapshot = live.next().await.unwrap().unwrap();
    assert_eq!(snapshot.get_str("address"), Some("192.0.2.199"));
    client
        .execute(
            Command::builder("/ip/firewall/address-list/add")
                .attr("list", "other")
                .attr("address", "192.0.2.200")
                .attr("timeout", "60s")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let change = live.next().await.unwrap().unwrap();
    assert_eq!(change.get_str("address"), Some("192.0.2.200"));
    live.cancel().await.unwrap();

    // The connection is healthy and late sentences were dropped, not misrouted.
    let count = client
        .execute(
            Command::builder("/ip/firewall/address-list/print")
                .flag("count-only")
                .query(Query::Eq("list".into(), LIST.as_bytes().to_vec()))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(count.ret_str(), Some(ROWS.to_string().as_str()));
    assert!(!client.is_closed());
}

async fn serve_tls() -> (Sim, RunningSim) {
    let sim = Sim::new(sim_config());
    let running = sim.serve_tls("127.0.0.1:0").await.unwrap();
    (sim, running)
}

fn tls_config(running: &RunningSim, trust: TlsTrust) -> ClientConfig {
    let mut c = client_config(running);
    c.tls = Some(TlsConfig::new(trust));
    c
}

#[tokio::test]
async fn tls_pinned_fingerprint_connects() {
    let (sim, running) = serve_tls().await;
    let pin = running.fingerprint_sha256().unwrap();
    let client = Client::connect(tls_config(&running, TlsTrust::Fingerprint(pin)))
        .await
        .unwrap();
    client.execute(add("192.0.2.77")).await.unwrap();
    assert_eq!(sim.address_list(Family::V4, LIST).len(), 1);
    client.quit().await.unwrap();
}

#[tokio::test]
async fn tls_wrong_pin_is_refused_with_a_clear_error() {
    let (_sim, running) = serve_tls().await;
    let real = running.fingerprint_sha256().unwrap();
    let mut wrong = real;
    wrong[0] ^= 0xff;
    let err = Client::connect(tls_config(&running, TlsTrust::Fingerprint(wrong)))
        .await
        .unwrap_err();
    match &err {
        ConnectError::FingerprintMismatch { expected, got } => {
            assert_eq!(expected, &format_fingerprint(&wrong));
            assert_eq!(got, &format_fingerprint(&real));
        }
        other => panic!("{other:?}"),
    }
    eprintln!("wrong pin: {err}");
}

#[tokio::test]
async fn tls_with_the_router_certificate_as_ca_connects() {
    let (_sim, running) = serve_tls().await;
    let pem = running.cert_pem().unwrap();
    let cert = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    let client = Client::connect(tls_config(&running, TlsTrust::Ca(vec![cert])))
        .await
        .unwrap();
    client.execute(add("192.0.2.78")).await.unwrap();
    client.quit().await.unwrap();
}

#[tokio::test]
async fn silent_follow_streams_need_no_timeout_and_idle_streams_time_out() {
    let (_sim, running) = serve(sim_config()).await;
    let mut config = client_config(&running);
    config.command_timeout = Duration::from_millis(200);
    let client = Client::connect(config).await.unwrap();
    let follow = || {
        Command::builder("/ip/firewall/address-list/print")
            .flag("follow-only")
            .query(Query::Eq("list".into(), LIST.as_bytes().to_vec()))
            .build()
            .unwrap()
    };

    // Default: the command timeout bounds each wait, and the stream is cancelled.
    let mut idle = client.stream(follow()).await.unwrap();
    assert!(matches!(
        idle.next().await,
        Some(Err(Error::Timeout { .. }))
    ));
    assert!(idle.next().await.is_none());

    // Without a timeout, a quiet `=follow-only=` stream just waits for the next change.
    let mut live = client.stream(follow()).await.unwrap();
    live.set_timeout(None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.execute(add("192.0.2.123")).await.unwrap();
    let change = live.next().await.unwrap().unwrap();
    assert_eq!(change.get_str("address"), Some("192.0.2.123"));
    live.cancel().await.unwrap();
    assert!(!client.is_closed());
}
