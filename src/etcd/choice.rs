//! Choosing the one member a snapshot is taken from, and proving it is current.
//!
//! A member cut off from its peers still answers `Status` and still streams a snapshot,
//! of stale data. So a member qualifies only when:
//! 1. it answers `Status` and is not a learner;
//! 2. it knows a leader (`leader != 0`) and reports no errors (`etcdserver: no leader`,
//!    alarms);
//! 3. the cluster's alarm list (asked through it, which needs a working raft) names no
//!    alarm for it (NOSPACE, CORRUPT);
//! 4. a linearizable read through it succeeds: etcd answers one only after confirming
//!    with the leader that the member has applied everything committed before the read.
//!
//! The read's header revision R is the floor for the snapshot: its revision must be
//! ≥ R (checked by the backup after streaming, recorded in the manifest). Members are
//! tried in the order of preference (`--snapshot-from`); every member that did not
//! qualify is named with the reason when none is left.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, GetOptions};

use super::{EtcdError, EtcdSettings, MemberStatus, Prefer, connect_one, describe, member_status};

/// The member a snapshot will be taken from.
pub struct Chosen {
    /// Connected to that member only.
    pub client: Client,
    pub status: MemberStatus,
    /// The revision of a linearizable read through the member just before streaming.
    pub read_revision: i64,
}

/// Why a member was passed over, for the error that names every one.
fn passed_over(endpoint: &str, why: impl std::fmt::Display) -> String {
    format!("{endpoint}: {why}")
}

/// Picks and proves the member to snapshot. See the module documentation.
pub async fn select_member(s: &EtcdSettings) -> Result<Chosen, EtcdError> {
    let mut candidates: Vec<(Client, MemberStatus)> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for endpoint in &s.endpoints {
        let attempt = async {
            let mut client = connect_one(s, endpoint).await?;
            let status = within(
                s,
                endpoint,
                "endpoint status",
                member_status(&mut client, endpoint),
            )
            .await??;
            Ok::<_, EtcdError>((client, status))
        };
        match attempt.await {
            Ok((client, status)) => match unhealthy(&status) {
                Some(why) => refused.push(passed_over(endpoint, why)),
                None => candidates.push((client, status)),
            },
            // Settings and credentials are the same for every endpoint: stop at once.
            Err(
                e @ (EtcdError::TlsFile { .. } | EtcdError::Settings(_) | EtcdError::Auth { .. }),
            ) => {
                return Err(e);
            }
            Err(e) => refused.push(e.to_string()),
        }
    }
    order_by_preference(&mut candidates, s.prefer);

    let mut alarms: Option<Vec<(u64, String)>> = None;
    for (mut client, status) in candidates {
        let endpoint = status.endpoint.clone();
        // The alarm list is the cluster's; asking it once through a working member is enough.
        if alarms.is_none() {
            match within(
                s,
                &endpoint,
                "alarm list",
                alarm_list(&mut client, &endpoint),
            )
            .await
            {
                Ok(Ok(list)) => alarms = Some(list),
                Ok(Err(e)) | Err(e) => {
                    refused.push(e.to_string());
                    continue;
                }
            }
        }
        let raised: Vec<&str> = alarms
            .iter()
            .flatten()
            .filter(|(member, _)| *member == status.member_id)
            .map(|(_, alarm)| alarm.as_str())
            .collect();
        if !raised.is_empty() {
            refused.push(passed_over(
                &endpoint,
                format!(
                    "member {:x} has alarm {} raised",
                    status.member_id,
                    raised.join(", ")
                ),
            ));
            continue;
        }
        match within(
            s,
            &endpoint,
            "linearizable read",
            linearizable_revision(&mut client, &endpoint),
        )
        .await
        {
            Ok(Ok(read_revision)) => {
                if s.endpoints.len() > 1 && s.prefer == Prefer::Follower && status.is_leader() {
                    tracing::warn!(endpoint = %endpoint, "no healthy follower; using the leader");
                }
                for why in &refused {
                    tracing::warn!(reason = %why, "member passed over");
                }
                tracing::info!(
                    endpoint = %endpoint,
                    member_id = format_args!("{:x}", status.member_id),
                    leader = status.is_leader(),
                    read_revision,
                    "snapshot source selected"
                );
                return Ok(Chosen {
                    client,
                    status,
                    read_revision,
                });
            }
            Ok(Err(e)) | Err(e) => refused.push(format!(
                "{e} (the member cannot confirm it is caught up with the leader)"
            )),
        }
    }
    Err(EtcdError::NoSafeMember(refused))
}

/// Why `Status` alone rules the member out, if it does.
fn unhealthy(st: &MemberStatus) -> Option<String> {
    if st.is_learner {
        return Some(format!("member {:x} is a learner", st.member_id));
    }
    if st.leader == 0 {
        let errors = if st.errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", st.errors.join(", "))
        };
        return Some(format!(
            "member {:x} reports no leader{errors}: it has lost its cluster, and its data may be stale",
            st.member_id
        ));
    }
    if !st.errors.is_empty() {
        return Some(format!(
            "member {:x} reports errors: {}",
            st.member_id,
            st.errors.join(", ")
        ));
    }
    None
}

/// Preferred first; the order of `--endpoints` otherwise.
fn order_by_preference(candidates: &mut [(Client, MemberStatus)], prefer: Prefer) {
    let rank = |st: &MemberStatus| match prefer {
        Prefer::Follower => u8::from(st.is_leader()),
        Prefer::Leader => u8::from(!st.is_leader()),
        Prefer::Any => 0,
    };
    candidates.sort_by_key(|(_, st)| rank(st)); // stable: keeps the endpoint order
}

/// A request bounded by `--command-timeout`.
async fn within<T>(
    s: &EtcdSettings,
    endpoint: &str,
    what: &'static str,
    request: impl Future<Output = T>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(s.command_timeout, request)
        .await
        .map_err(|_| EtcdError::Request {
            endpoint: endpoint.to_owned(),
            what,
            reason: format!(
                "no answer within {} (--command-timeout)",
                human(s.command_timeout)
            ),
        })
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Every alarm raised in the cluster: (member id, alarm name).
async fn alarm_list(client: &mut Client, endpoint: &str) -> Result<Vec<(u64, String)>, EtcdError> {
    let response = client
        .alarm(AlarmAction::Get, AlarmType::None, Some(AlarmOptions::new()))
        .await
        .map_err(|e| EtcdError::Request {
            endpoint: endpoint.to_owned(),
            what: "alarm list",
            reason: describe(&e),
        })?;
    Ok(response
        .alarms()
        .iter()
        .map(|a| {
            let name = match a.alarm() {
                AlarmType::Nospace => "NOSPACE".to_owned(),
                AlarmType::Corrupt => "CORRUPT".to_owned(),
                AlarmType::None => "NONE".to_owned(),
            };
            (a.member_id(), name)
        })
        .filter(|(_, name)| name != "NONE")
        .collect())
}

/// The header revision of a linearizable (not serializable) read through the member:
/// etcd answers it only once the member has caught up with the leader's commit index.
async fn linearizable_revision(client: &mut Client, endpoint: &str) -> Result<i64, EtcdError> {
    let response = client
        .get(
            "lifeboat/revision-probe",
            Some(GetOptions::new().with_count_only()),
        )
        .await
        .map_err(|e| EtcdError::Request {
            endpoint: endpoint.to_owned(),
            what: "linearizable read",
            reason: describe(&e),
        })?;
    Ok(response.header().map(|h| h.revision()).unwrap_or(0))
}
