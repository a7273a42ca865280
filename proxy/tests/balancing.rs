//! Load balancing, active health checks and outlier detection through the real binary. The
//! statistical properties of each policy are unit-tested with fixed seeds in `cluster::lb`; here
//! each policy is shown to spread real traffic as it should.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;

async fn three() -> (Upstream, Upstream, Upstream) {
    (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    )
}

#[tokio::test]
async fn round_robin_is_exactly_even() {
    let (a, b, c) = three().await;
    let proxy = Proxy::start(&simple_config(
        "    lb_policy: round_robin\n",
        &[a.addr, b.addr, c.addr],
        "",
    ));
    for _ in 0..90 {
        assert_eq!(get(proxy.addr("main"), "/").await.status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (30, 30, 30));
}

#[tokio::test]
async fn random_and_least_request_use_every_endpoint() {
    for policy in ["random", "least_request"] {
        let (a, b, c) = three().await;
        let proxy = Proxy::start(&simple_config(
            &format!("    lb_policy: {policy}\n"),
            &[a.addr, b.addr, c.addr],
            "",
        ));
        for _ in 0..150 {
            assert_eq!(get(proxy.addr("main"), "/").await.status, StatusCode::OK);
        }
        let hits = [a.hits(), b.hits(), c.hits()];
        assert_eq!(hits.iter().sum::<usize>(), 150);
        // Sequential requests leave every endpoint idle, so each policy must still spread load.
        assert!(hits.iter().all(|&h| h >= 10), "{policy}: {hits:?}");
    }
}

#[tokio::test]
async fn peak_ewma_steers_away_from_a_slow_endpoint() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    // 20 ms against well under a millisecond: a gap no scheduling noise can close.
    let slow = Upstream::with(|_| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply(StatusCode::OK, "slow", "slow")
    })
    .await;
    let proxy = Proxy::start(&simple_config(
        "    lb_policy: peak_ewma\n",
        &[a.addr, b.addr, slow.addr],
        "",
    ));
    for _ in 0..150 {
        assert_eq!(get(proxy.addr("main"), "/").await.status, StatusCode::OK);
    }
    assert!(slow.hits() < 15, "slow endpoint got {} of 150", slow.hits());
    assert!(
        a.hits() > 20 && b.hits() > 20,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test]
async fn ring_hash_is_sticky_per_key() {
    let (a, b, c) = three().await;
    let cluster = "    lb_policy: ring_hash\n    ring_hash:\n      header: x-user\n";
    let proxy = Proxy::start(&simple_config(cluster, &[a.addr, b.addr, c.addr], ""));
    let mut owners = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let user = format!("user-{user}");
            let got = send(
                proxy.addr("main"),
                request("GET", "/", &[("x-user", &user)]),
                false,
            )
            .await;
            let owner = got.header("x-upstream").expect("x-upstream").to_string();
            let first = owners.entry(user.clone()).or_insert(owner.clone());
            assert_eq!(first, &owner, "round {round}: {user} moved");
        }
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        distinct.len() >= 2,
        "30 keys should land on more than one endpoint: {owners:?}"
    );
}

#[tokio::test]
async fn outlier_ejection_and_recovery() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let bad = Upstream::with(move |_| {
        let failing = f.load(Ordering::SeqCst);
        async move {
            if failing {
                reply(StatusCode::INTERNAL_SERVER_ERROR, "bad", "boom")
            } else {
                reply(StatusCode::OK, "bad", "recovered")
            }
        }
    })
    .await;
    let good = Upstream::named("good").await;
    let cluster = "    outlier_detection:\n      consecutive_5xx: 3\n      base_ejection_time: 1s\n      max_ejection_percent: 50\n";
    let proxy = Proxy::start(&simple_config(cluster, &[bad.addr, good.addr], ""));
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(proxy.addr("main"), "/").await.status);
    }
    // Round robin sends 3 to `bad` before it is ejected; after that only `good` answers.
    assert_eq!(bad.hits(), 3, "{statuses:?}");
    assert!(
        statuses[6..].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let clusters = get_admin_text(proxy.admin.expect("admin"), "/clusters");
    assert!(clusters.contains("\"ejected\": true"), "{clusters}");
    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    assert!(
        stats.contains("wasmesh_outlier_ejections_total{cluster=\"backend\"} 1"),
        "{stats}"
    );

    // Once the endpoint is fixed and its ejection time is over, it takes traffic again.
    failing.store(false, Ordering::SeqCst);
    let addr = proxy.addr("main");
    let back = eventually(Duration::from_secs(20), async || {
        get(addr, "/").await.header("x-upstream") == Some("bad")
    })
    .await;
    assert!(back, "ejected endpoint never came back");
}

/// Envoy's `consecutive_gateway_failure` counts 502, 503 and 504 answers (Istio's
/// `consecutiveGatewayErrors`), not only failures to get an answer; 500 is a 5xx only.
#[tokio::test]
async fn gateway_error_answers_count_as_gateway_failures() {
    let unavailable =
        Upstream::with(|_| async { reply(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "down") })
            .await;
    let broken =
        Upstream::with(|_| async { reply(StatusCode::INTERNAL_SERVER_ERROR, "broken", "bug") })
            .await;
    let good = Upstream::named("good").await;
    let cluster = "    outlier_detection: { consecutive_5xx: 0, consecutive_gateway_failure: 3, \
                   base_ejection_time: 60s, max_ejection_percent: 50 }\n";
    let proxy = Proxy::start(&simple_config(
        cluster,
        &[unavailable.addr, broken.addr, good.addr],
        "",
    ));
    for _ in 0..30 {
        get(proxy.addr("main"), "/").await;
    }
    assert_eq!(unavailable.hits(), 3, "ejected after its third 503");
    assert!(broken.hits() >= 10, "500s are not gateway failures");
}

#[tokio::test]
async fn active_health_check_removes_and_restores_an_endpoint() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let flaky = Upstream::with(move |seen: Seen| {
        let ok = h.load(Ordering::SeqCst) || seen.path != "/healthz";
        async move {
            if ok {
                reply(StatusCode::OK, "flaky", "ok")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "flaky", "unhealthy")
            }
        }
    })
    .await;
    let steady = Upstream::named("steady").await;
    let cluster = "    health_check:\n      path: /healthz\n      interval: 100ms\n      timeout: 1s\n      healthy_threshold: 1\n      unhealthy_threshold: 1\n";
    let proxy = Proxy::start(&simple_config(cluster, &[flaky.addr, steady.addr], ""));
    let admin = proxy.admin.expect("admin");
    healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(20), async || get_admin_text(
            admin,
            "/clusters"
        )
        .contains("\"healthy\": false"))
        .await,
        "health check never marked the endpoint unhealthy"
    );
    for _ in 0..10 {
        let got = get(proxy.addr("main"), "/").await;
        assert_eq!(got.header("x-upstream"), Some("steady"));
    }
    healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(20), async || !get_admin_text(
            admin,
            "/clusters"
        )
        .contains("\"healthy\": false"))
        .await,
        "health check never restored the endpoint"
    );
}

/// Envoy's health checks are not subject to the cluster's circuit breakers: a cluster whose
/// connections are all busy is saturated, not unhealthy.
#[tokio::test]
async fn health_checks_are_not_failed_by_the_clusters_connection_limit() {
    let busy = Upstream::with(|seen: Seen| async move {
        if seen.path == "/slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        reply(StatusCode::OK, "busy", "ok")
    })
    .await;
    // Once unhealthy it would stay so for the rest of the test (healthy_threshold).
    let cluster = "    circuit_breakers: { max_connections: 1 }\n    health_check: { path: /healthz, \
                   interval: 100ms, timeout: 1s, healthy_threshold: 1000, unhealthy_threshold: 1 }\n";
    let proxy = Proxy::start(&simple_config(cluster, &[busy.addr], ""));
    let addr = proxy.addr("main");
    // The one connection is busy for 2 s, through about 20 checks that cannot connect. (The
    // request itself is refused if a check holds the connection when it comes.)
    let mut slow = false;
    for _ in 0..20 {
        if get(addr, "/slow").await.status == StatusCode::OK {
            slow = true;
            break;
        }
    }
    assert!(slow, "the slow request never got the connection");
    let clusters = get_admin_text(proxy.admin.expect("admin"), "/clusters");
    assert!(clusters.contains("\"healthy\": true"), "{clusters}");
    assert_eq!(get(addr, "/").await.status, StatusCode::OK);
}

/// An endpoint health checks took out of service comes back when a reload removes the check:
/// nothing would ever mark it healthy again.
#[tokio::test]
async fn an_unhealthy_endpoint_is_back_when_its_health_check_is_removed() {
    let sick = Upstream::with(|seen: Seen| async move {
        if seen.path == "/healthz" {
            reply(StatusCode::SERVICE_UNAVAILABLE, "sick", "unhealthy")
        } else {
            reply(StatusCode::OK, "sick", "ok")
        }
    })
    .await;
    let steady = Upstream::named("steady").await;
    let checked = "    health_check: { path: /healthz, interval: 100ms, timeout: 1s, \
                   healthy_threshold: 1, unhealthy_threshold: 1 }\n";
    let proxy = Proxy::start(&simple_config(checked, &[sick.addr, steady.addr], ""));
    let admin = proxy.admin.expect("admin");
    assert!(
        eventually(Duration::from_secs(20), async || get_admin_text(
            admin,
            "/clusters"
        )
        .contains("\"healthy\": false"))
        .await,
        "health check never marked the endpoint unhealthy"
    );
    let unchecked = simple_config("", &[sick.addr, steady.addr], "");
    let (status, body) = admin_call(admin, "PUT", "/config", &unchecked);
    assert_eq!(status, 200, "{body}");
    let clusters = get_admin_text(admin, "/clusters");
    assert!(!clusters.contains("\"healthy\": false"), "{clusters}");
    let mut answered = std::collections::HashSet::new();
    for _ in 0..4 {
        answered.insert(
            get(proxy.addr("main"), "/")
                .await
                .header("x-upstream")
                .map(String::from),
        );
    }
    assert!(answered.contains(&Some("sick".to_string())), "{answered:?}");
}

/// A reload that changes a cluster's health check stops the old cluster's checks, though a
/// request that started before still uses the old cluster: two loops would otherwise fight
/// over the endpoints the clusters share.
#[tokio::test]
async fn a_replaced_clusters_health_checks_stop() {
    let old_probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = old_probes.clone();
    let upstream = Upstream::with(move |seen: Seen| {
        if seen.path == "/old" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if seen.path == "/slow" {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            reply(StatusCode::OK, "up", "ok")
        }
    })
    .await;
    let check = |path: &str| {
        format!(
            "    health_check: {{ path: {path}, interval: 100ms, timeout: 1s, \
             healthy_threshold: 1, unhealthy_threshold: 1 }}\n"
        )
    };
    let proxy = Proxy::start(&simple_config(&check("/old"), &[upstream.addr], ""));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    assert!(
        eventually(Duration::from_secs(20), async || old_probes
            .load(Ordering::SeqCst)
            > 0)
        .await
    );
    // Holds the old snapshot, and with it the old cluster, for 2 s.
    let slow = tokio::spawn(async move { get(addr, "/slow").await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = admin_call(
        admin,
        "PUT",
        "/config",
        &simple_config(&check("/new"), &[upstream.addr], ""),
    );
    assert_eq!(status, 200, "{body}");
    let at_reload = old_probes.load(Ordering::SeqCst);
    assert_eq!(slow.await.expect("slow request"), StatusCode::OK);
    let after = old_probes.load(Ordering::SeqCst) - at_reload;
    // At most the one probe that was under way when the reload came.
    assert!(
        after <= 1,
        "{after} checks of the old path after the reload"
    );
}
