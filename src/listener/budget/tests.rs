use std::time::Duration;

use super::*;

const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

fn admit(budget: &ConnectionBudget, peer: IpAddr) -> Arc<Slot> {
    budget.admit(peer).unwrap().slot
}

async fn is_evicted(slot: &Slot) -> bool {
    tokio::time::timeout(Duration::from_millis(50), slot.evicted()).await.is_ok()
}

#[tokio::test]
async fn a_full_listener_closes_its_longest_waiting_connection_for_a_new_one() {
    let budget = ConnectionBudget::new("proxy", 3, 3);
    let (first, second, third) = (admit(&budget, A), admit(&budget, A), admit(&budget, A));
    let admitted = budget.admit(B).unwrap();
    assert_eq!(admitted.evicted, Some(A));
    assert!(is_evicted(&first).await);
    assert!(!is_evicted(&second).await && !is_evicted(&third).await && !is_evicted(&admitted.slot).await);
    assert_eq!(budget.held(), 3);
    drop(first);
    assert_eq!(budget.held(), 3, "an evicted slot was already given back");
}

#[tokio::test]
async fn connections_serving_requests_are_never_evicted() {
    let budget = ConnectionBudget::new("proxy", 2, 2);
    let (a, b) = (admit(&budget, A), admit(&budget, B));
    let (_ga, gb) = (a.begin_request(), b.begin_request());
    assert_eq!(budget.admit(A).err(), Some(Refused::ListenerFull(2)));
    // Once b's response is done it waits for its next request, and may go.
    drop(gb);
    assert_eq!(budget.admit(A).unwrap().evicted, Some(B));
    assert!(is_evicted(&b).await);
    assert!(!is_evicted(&a).await);
}

#[tokio::test]
async fn a_peer_at_its_quota_makes_room_from_its_own_connections_only() {
    let budget = ConnectionBudget::new("proxy", 10, 2);
    let other = admit(&budget, B);
    let (a1, a2) = (admit(&budget, A), admit(&budget, A));
    let a3 = budget.admit(A).unwrap();
    assert_eq!(a3.evicted, Some(A));
    assert!(is_evicted(&a1).await);
    assert!(!is_evicted(&other).await, "B's older waiting connection is not A's to take");
    // A holds a2 (serving a request) and a3 (waiting): the waiting one makes room.
    let _in_flight = a2.begin_request();
    assert_eq!(budget.admit(A).unwrap().evicted, Some(A));
    assert!(is_evicted(&a3.slot).await && !is_evicted(&a2).await);
    let budget = ConnectionBudget::new("proxy", 10, 1);
    let busy = admit(&budget, A);
    let _g = busy.begin_request();
    assert_eq!(budget.admit(A).err(), Some(Refused::PeerQuota(1)));
    assert!(budget.admit(B).is_ok(), "another peer still gets in");
}

#[tokio::test]
async fn a_connection_waits_anew_after_each_request() {
    let budget = ConnectionBudget::new("proxy", 2, 2);
    let (older, newer) = (admit(&budget, A), admit(&budget, A));
    drop(older.begin_request());
    // `older` served a request after `newer` was opened: `newer` has waited longest.
    budget.admit(A).unwrap();
    assert!(is_evicted(&newer).await);
    assert!(!is_evicted(&older).await);
}

#[tokio::test]
async fn connections_that_never_sent_a_head_go_before_older_idle_ones() {
    let budget = ConnectionBudget::new("proxy", 3, 3);
    // A client's tunnel: its CONNECT was served, it now waits for the TLS handshake.
    let tunnel = admit(&budget, A);
    drop(tunnel.begin_request());
    // A slowloris keeps opening connections that never complete a head.
    let (half1, half2) = (admit(&budget, A), admit(&budget, A));
    let mut held = Vec::new();
    for _ in 0..10 {
        let admitted = budget.admit(A).unwrap();
        assert_eq!(admitted.evicted, Some(A));
        held.push(admitted.slot);
    }
    assert!(is_evicted(&half1).await && is_evicted(&half2).await);
    assert!(!is_evicted(&tunnel).await, "the served, idle tunnel outlived ten half-open connections");
}

#[tokio::test]
async fn established_sessions_stay_and_dropped_slots_are_given_back() {
    let budget = ConnectionBudget::new("database:shop", 1, 1);
    let session = admit(&budget, A);
    session.establish();
    assert_eq!(budget.admit(A).err(), Some(Refused::PeerQuota(1)));
    drop(session);
    assert_eq!(budget.held(), 0);
    assert!(budget.admit(A).unwrap().evicted.is_none());
}

#[tokio::test]
async fn an_evicted_connection_is_dropped_and_its_tunnels_with_it() {
    let budget = ConnectionBudget::new("proxy", 1, 1);
    let admitted = budget.admit(A).unwrap();
    let ctx = ConnectionContext { listener: budget.listener().clone(), peer: None, slot: Some(admitted.slot) };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let connection = tokio::spawn(run_in(ctx, async move {
        // The connection opens a tunnel that outlives the connection's own task.
        tokio::spawn(carry(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        }));
        std::future::pending::<()>().await
    }));
    tokio::task::yield_now().await;
    assert_eq!(budget.held(), 1);
    budget.admit(A).unwrap();
    tokio::time::timeout(Duration::from_secs(5), connection).await.unwrap().unwrap();
    // The tunnel ended too: its sender is gone.
    assert!(tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().is_err());
}
