//! SQLite backend tests (the conformance checks every backend must pass).

#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;
use crate::PrincipalWrite;
use stint_core::{NewSession, PendingAudit, PrincipalId};
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-27 12:00:00 UTC);

fn principal(n: u128, name: &str) -> PrincipalRecord {
    PrincipalRecord {
        id: PrincipalId::from_u128(n).to_string(),
        name: name.into(),
        kind: "service".into(),
        groups: vec!["ops".into()],
        key_hash: Some(format!("{n:064x}")),
        created_at: NOW,
        deleted_at: None,
    }
}

fn session(n: u128) -> Session {
    let (s, _) = Session::request(
        NewSession {
            id: SessionId::from_u128(n),
            principal: PrincipalId::from_u128(1),
            target: "api".into(),
            reason: "test".into(),
            ttl_s: 60,
            max_ttl_s: 600,
            token_ttl_s: 30,
            approvals_required: 1,
            approval_window_s: 3600,
            binding: Default::default(),
            not_before: None,
            idle_timeout_s: None,
            max_uses: None,
            break_glass: false,
        },
        NOW,
    )
    .unwrap();
    s
}

fn event(action: &str) -> PendingAudit {
    PendingAudit {
        at: NOW,
        actor: "system".into(),
        action: action.into(),
        session: None,
        details: serde_json::json!({"k": action}),
    }
}

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("stint.db")).await.unwrap();
    (dir, s)
}

#[tokio::test]
async fn principals_round_trip_and_names_are_unique() {
    let (_d, st) = store().await;
    let p = principal(1, "ci");
    st.commit(Batch {
        principals: vec![PrincipalWrite::Insert(p.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(st.principal(&p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(
        st.principal_by_key_hash(p.key_hash.as_deref().unwrap())
            .await
            .unwrap(),
        Some(p.clone())
    );
    let dup = st
        .commit(Batch {
            principals: vec![PrincipalWrite::Insert(principal(2, "ci"))],
            audit: vec![event("principal.created")],
            ..Default::default()
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate(n)) if n == "ci"));
    // The failed batch wrote nothing, not even its audit event.
    assert!(st.audit(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn session_updates_check_the_version() {
    let (_d, st) = store().await;
    let s = session(7);
    st.commit(Batch {
        sessions: vec![SessionWrite {
            session: s.clone(),
            expected_version: None,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let v = st.session(&s.id).await.unwrap().unwrap();
    assert_eq!(v.version, 1);
    let write = |ver| Batch {
        sessions: vec![SessionWrite {
            session: s.clone(),
            expected_version: Some(ver),
        }],
        audit: vec![event("session.approved")],
        ..Default::default()
    };
    st.commit(write(1)).await.unwrap();
    assert!(matches!(st.commit(write(1)).await, Err(StoreError::Conflict)));
    assert_eq!(st.audit(0, 10).await.unwrap().len(), 1);
    assert_eq!(st.live_sessions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn audit_chain_links_across_commits_and_detects_tampering() {
    let (_d, st) = store().await;
    for a in ["a.one", "a.two", "a.three"] {
        st.commit(Batch {
            audit: vec![event(a), event(a)],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let v = st.verify_audit().await.unwrap();
    assert!(v.ok);
    assert_eq!(v.events, 6);
    st.execute_raw("UPDATE audit SET actor = 'prn_x' WHERE seq = 4".into())
        .await
        .unwrap();
    let v = st.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(4));
    st.execute_raw("DELETE FROM audit WHERE seq = 2".into())
        .await
        .unwrap();
    assert_eq!(st.verify_audit().await.unwrap().first_bad_seq, Some(2));
}

#[tokio::test]
async fn events_cut_from_the_end_of_the_chain_are_found() {
    let (_d, st) = store().await;
    for a in ["a.one", "a.two", "a.three"] {
        st.commit(Batch {
            audit: vec![event(a)],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert!(st.verify_audit().await.unwrap().ok);
    st.execute_raw("DELETE FROM audit WHERE seq = 3".into())
        .await
        .unwrap();
    let v = st.verify_audit().await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(3));
}

#[tokio::test]
async fn concurrent_commits_share_transactions_and_a_failing_batch_rolls_back_alone() {
    let (_d, st) = store().await;
    let mut tasks = Vec::new();
    for n in 0..60u128 {
        let st = st.clone();
        // Every 20th batch reuses a name and must fail without taking its group down.
        let name = if n % 20 == 19 {
            "dup".to_owned()
        } else {
            format!("p{n}")
        };
        tasks.push(tokio::spawn(async move {
            st.commit(Batch {
                principals: vec![PrincipalWrite::Insert(principal(n + 1, &name))],
                audit: vec![event("principal.created"), event("principal.created")],
                ..Default::default()
            })
            .await
        }));
    }
    let mut ok = 0;
    let mut dup = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(recs) => {
                ok += 1;
                assert_eq!(recs.len(), 2);
                assert_eq!(recs[1].seq, recs[0].seq + 1);
            }
            Err(StoreError::Duplicate(n)) => {
                assert_eq!(n, "dup");
                dup += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, dup), (58, 2));
    let v = st.verify_audit().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.events, 116);
    assert_eq!(st.principals(None, 1000).await.unwrap().len(), 58);
}
