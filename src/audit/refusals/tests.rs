use super::*;

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until every record queued before now is on disk (the writer keeps order).
async fn settle(log: &AuditLog) {
    log.append(AuditRecord::new(AuditEvent::Allow, "marker", "m", "t")).await.unwrap();
}

#[tokio::test]
async fn a_flood_is_written_as_a_burst_then_one_aggregate_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let audit = RefusalAudit::with_limits(log.clone(), "acme", None, 3, Duration::from_millis(100));
    for i in 0..10u8 {
        let mut r = Refusal::new("unrouted_host", "proxy", "req", "no route for host imds");
        r.peer = Some(IpAddr::from([127, 0, 0, i]));
        r.target = Some("169.254.169.254");
        audit.record(r);
    }
    // Another kind has its own budget.
    audit.record(Refusal::new("connection_limit", "proxy", "req2", "listener full"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    audit.flush_expired();
    settle(&log).await;

    let recs = records(&path);
    let singles: Vec<_> = recs.iter().filter(|r| r["details"]["code"] == "unrouted_host" && r["details"].get("aggregate").is_none()).collect();
    assert_eq!(singles.len(), 3, "{recs:#?}");
    assert_eq!(singles[0]["event"], "deny");
    assert_eq!(singles[0]["agent_id"], UNIDENTIFIED_AGENT);
    assert_eq!(singles[0]["tenant"], "acme");
    assert_eq!(singles[0]["details"]["target"], "169.254.169.254");
    assert_eq!(singles[0]["details"]["peer"], "127.0.0.0");
    let aggregate: Vec<_> = recs.iter().filter(|r| r["details"]["aggregate"] == "true").collect();
    assert_eq!(aggregate.len(), 1, "{recs:#?}");
    assert_eq!(aggregate[0]["details"]["suppressed"], "7");
    assert_eq!(aggregate[0]["details"]["code"], "unrouted_host");
    assert!(aggregate[0]["details"]["peers"].as_str().unwrap().contains("127.0.0.3"));
    assert_eq!(recs.iter().filter(|r| r["details"]["code"] == "connection_limit").count(), 1);
}

#[tokio::test]
async fn the_background_task_closes_a_window_after_the_flood_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let audit = RefusalAudit::with_limits(log.clone(), "acme", None, 1, Duration::from_millis(50));
    for _ in 0..5 {
        audit.record(Refusal::new("not_a_proxy_request", "proxy", "r", "origin-form request"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        settle(&log).await;
        if records(&path).iter().any(|r| r["details"]["suppressed"] == "4") {
            break;
        }
        assert!(Instant::now() < deadline, "no aggregate record was written: {:#?}", records(&path));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(audit);
}

#[tokio::test]
async fn a_new_window_writes_singles_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let audit = RefusalAudit::with_limits(log.clone(), "acme", None, 2, Duration::from_millis(40));
    for _ in 0..4 {
        audit.record(Refusal::new("malformed_request", "proxy", "r", "bad head"));
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    audit.record(Refusal::new("malformed_request", "proxy", "r", "bad head"));
    settle(&log).await;
    let recs = records(&path);
    let singles = recs.iter().filter(|r| r["details"]["code"] == "malformed_request" && r["details"].get("aggregate").is_none()).count();
    assert_eq!(singles, 3, "{recs:#?}");
    assert!(recs.iter().any(|r| r["details"]["suppressed"] == "2"), "{recs:#?}");
}
