//! SQLite backend tests (the conformance checks every backend must pass).

#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;
use crate::{DocumentRecord, DocumentWrite, PrincipalWrite, SeenRecord};
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

#[tokio::test]
async fn ending_a_session_queues_its_external_revocations_in_the_same_commit() {
    use stint_core::{Actor, Credential, CredentialId, CredentialKind, EndReason, Event, Revocation};
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
    let (s, _) = s
        .apply(
            Event::Approve {
                approver: PrincipalId::from_u128(2),
                comment: None,
            },
            NOW,
        )
        .unwrap();
    let cred = |n: u128, kind: CredentialKind, handle: &str| Credential {
        id: CredentialId::from_u128(n),
        kind,
        handle: handle.into(),
        key_id: None,
        issued_at: NOW,
        expires_at: NOW + time::Duration::seconds(30),
        revoked_at: None,
        revocation: Revocation::None,
        first_used_at: None,
        revocation_attempts: 0,
        revocation_error: None,
    };
    let mut s = s;
    for c in [
        cred(1, CredentialKind::Postgres, "stint_role1"),
        cred(2, CredentialKind::Ssh, "4242"),
        cred(3, CredentialKind::Jwt, "abcd"),
    ] {
        s = s.apply(Event::Issue { credential: c }, NOW).unwrap().0;
    }
    let write = |s: &Session, v: i64| Batch {
        sessions: vec![SessionWrite {
            session: s.clone(),
            expected_version: Some(v),
        }],
        ..Default::default()
    };
    st.commit(write(&s, 1)).await.unwrap();
    assert!(
        st.outstanding_revocations().await.unwrap().is_empty(),
        "nothing to revoke while live"
    );

    let (ended, _) = s
        .apply(
            Event::End {
                by: Actor::System,
                reason: EndReason::Completed,
            },
            NOW,
        )
        .unwrap();
    st.commit(write(&ended, 2)).await.unwrap();
    let rows = st.outstanding_revocations().await.unwrap();
    let handles: Vec<&str> = rows.iter().map(|r| r.handle.as_str()).collect();
    assert_eq!(
        handles,
        ["stint_role1", "4242"],
        "external kinds only; jwt needs no job"
    );
    assert!(
        rows.iter()
            .all(|r| r.state == "pending" && r.session == ended.id.as_str())
    );
    let serials = st.revoked_handles("api", CredentialKind::Ssh, NOW).await.unwrap();
    assert_eq!(serials, ["4242"]);
    let after_expiry = st
        .revoked_handles("api", CredentialKind::Ssh, NOW + time::Duration::seconds(31))
        .await
        .unwrap();
    assert!(after_expiry.is_empty(), "expired certificates need no KRL entry");

    // A failure is recorded with its error and count; a confirmation takes the row off the outbox
    // (the KRL still lists the confirmed serial until it expires).
    let (failed, _) = ended
        .apply(
            Event::RevocationFailed {
                credential: CredentialId::from_u128(1),
                error: "connection refused".into(),
                give_up: false,
            },
            NOW,
        )
        .unwrap();
    st.commit(write(&failed, 3)).await.unwrap();
    let row = st
        .outstanding_revocations()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.handle == "stint_role1")
        .unwrap();
    assert_eq!(
        (row.attempts, row.last_error.as_deref()),
        (1, Some("connection refused"))
    );
    let mut done = failed;
    for n in [1, 2] {
        done = done
            .apply(
                Event::RevocationConfirmed {
                    credential: CredentialId::from_u128(n),
                },
                NOW,
            )
            .unwrap()
            .0;
    }
    st.commit(write(&done, 4)).await.unwrap();
    assert!(st.outstanding_revocations().await.unwrap().is_empty());
    assert_eq!(
        st.revoked_handles("api", CredentialKind::Ssh, NOW).await.unwrap(),
        ["4242"]
    );
}

#[tokio::test]
async fn replay_guards_fail_the_whole_batch_until_they_expire() {
    let (_d, st) = store().await;
    let guard = |at: OffsetDateTime| SeenRecord {
        kind: "hook_event".into(),
        key: "evt-1".into(),
        expires_at: at + time::Duration::seconds(60),
        recorded_at: at,
    };
    st.commit(Batch {
        seen: vec![guard(NOW)],
        audit: vec![event("hook.received")],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(st.seen("hook_event", "evt-1", NOW).await.unwrap());
    let again = st
        .commit(Batch {
            seen: vec![guard(NOW + time::Duration::seconds(1))],
            audit: vec![event("hook.received")],
            ..Default::default()
        })
        .await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    assert_eq!(
        st.audit(0, 10).await.unwrap().len(),
        1,
        "the replayed batch wrote nothing"
    );
    // Once expired, the key may be recorded again.
    let later = NOW + time::Duration::seconds(61);
    assert!(!st.seen("hook_event", "evt-1", later).await.unwrap());
    st.commit(Batch {
        seen: vec![guard(later)],
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn documents_and_sessions_by_binding() {
    let (_d, st) = store().await;
    let doc = |name: &str| DocumentRecord {
        kind: "trust".into(),
        name: name.into(),
        doc: "{}".into(),
        created_at: NOW,
    };
    st.commit(Batch {
        documents: vec![
            DocumentWrite::Insert(doc("gha")),
            DocumentWrite::Insert(doc("gitlab")),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let dup = st
        .commit(Batch {
            documents: vec![DocumentWrite::Insert(doc("gha"))],
            ..Default::default()
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))));
    let names: Vec<String> = st
        .documents("trust")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["gha", "gitlab"]);
    st.commit(Batch {
        documents: vec![DocumentWrite::Delete("trust".into(), "gha".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(st.documents("trust").await.unwrap().len(), 1);

    let mut bound = session(11);
    bound.binding = stint_core::Binding {
        kind: stint_core::BindingKind::Pipeline,
        reference: Some("run-42".into()),
    };
    st.commit(Batch {
        sessions: vec![
            SessionWrite {
                session: bound,
                expected_version: None,
            },
            SessionWrite {
                session: session(12),
                expected_version: None,
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let found = st
        .sessions(&SessionFilter {
            binding: Some(("pipeline".into(), "run-42".into())),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].session.id, SessionId::from_u128(11));
}

/// Writes `n` new sessions (ids 1..=n) in one batch.
async fn insert_sessions(st: &SqliteStore, n: u128) -> Vec<Session> {
    let all: Vec<Session> = (1..=n).map(session).collect();
    st.commit(Batch {
        sessions: all
            .iter()
            .map(|s| SessionWrite {
                session: s.clone(),
                expected_version: None,
            })
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    all
}

#[tokio::test]
async fn many_sessions_are_read_at_once_and_live_ones_page_by_id() {
    let (_d, st) = store().await;
    let all = insert_sessions(&st, 1200).await;
    let mut ids: Vec<SessionId> = all.iter().map(|s| s.id.clone()).collect();
    ids.push(SessionId::from_u128(999_999));
    let mut found: Vec<String> = st
        .sessions_by_id(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.session.id.to_string())
        .collect();
    found.sort();
    let mut want: Vec<String> = all.iter().map(|s| s.id.to_string()).collect();
    want.sort();
    // More ids than one `IN (…)` takes; the unknown one is simply absent.
    assert_eq!(found, want);

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = st.live_sessions_after(after.as_ref(), 500).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 500);
        after = Some(last.session.id.clone());
        paged.extend(page.into_iter().map(|v| v.session.id.to_string()));
    }
    assert_eq!(paged, want, "every live session once, in id order");
}

#[tokio::test]
async fn a_multi_row_update_with_one_stale_version_writes_nothing() {
    let (_d, st) = store().await;
    let all = insert_sessions(&st, 300).await;
    let writes = |stale: Option<usize>| Batch {
        sessions: all
            .iter()
            .enumerate()
            .map(|(i, s)| SessionWrite {
                session: Session {
                    reason: format!("changed {i}"),
                    ..s.clone()
                },
                expected_version: Some(if Some(i) == stale { 7 } else { 1 }),
            })
            .collect(),
        audit: vec![event("session.changed")],
        ..Default::default()
    };
    // One stale row among 300 (in the second statement's chunk): the whole batch fails.
    assert!(matches!(
        st.commit(writes(Some(280))).await,
        Err(StoreError::Conflict)
    ));
    for s in &all {
        let v = st.session(&s.id).await.unwrap().unwrap();
        assert_eq!((v.version, v.session.reason.as_str()), (1, "test"));
    }
    assert!(st.audit(0, 10).await.unwrap().is_empty());
    st.commit(writes(None)).await.unwrap();
    for (i, s) in all.iter().enumerate() {
        let v = st.session(&s.id).await.unwrap().unwrap();
        assert_eq!(v.version, 2);
        assert_eq!(v.session.reason, format!("changed {i}"));
    }
}
