//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder reconciles. The decision is pure; the I/O is a get and a replace guarded by
//! `resourceVersion`, so two candidates racing for an expired lease cannot both win.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// What a candidate should do with the lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// Decides from the lease's spec (absent: no lease yet).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else { return LeaseDecision::Acquire };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    if holder == me {
        return LeaseDecision::Renew;
    }
    let duration = jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    match renewed {
        Some(at) if at + duration > now => LeaseDecision::Follow { holder: holder.to_string() },
        _ => LeaseDecision::Acquire,
    }
}

/// The spec to write for a decision to take or keep the lease.
pub fn next_spec(previous: Option<&LeaseSpec>, me: &str, lease_duration: Duration, now: Timestamp) -> LeaseSpec {
    let held_by_me = previous.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(lease_duration.as_secs() as i32),
        acquire_time: if held_by_me {
            previous.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if held_by_me || previous.is_none() { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// A candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    lease_duration: Duration,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, lease_name: impl Into<String>, identity: impl Into<String>, lease_duration: Duration) -> Self {
        LeaderElector { api, lease_name: lease_name.into(), identity: identity.into(), lease_duration }
    }

    /// One round: returns whether we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.lease_name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        match decide(spec, &self.identity, now) {
            LeaseDecision::Follow { .. } => Ok(false),
            LeaseDecision::Acquire | LeaseDecision::Renew => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.lease_name.clone()),
                        resource_version: current.as_ref().and_then(|l| l.metadata.resource_version.clone()),
                        ..Default::default()
                    },
                    spec: Some(next_spec(spec, &self.identity, self.lease_duration, now)),
                };
                let result = match current {
                    Some(_) => self.api.replace(&self.lease_name, &PostParams::default(), &lease).await,
                    None => self.api.create(&PostParams::default(), &lease).await,
                };
                match result {
                    Ok(_) => Ok(true),
                    // Someone else wrote first (409 Conflict / AlreadyExists): they won this round.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until we hold the lease, retrying every `lease_duration / 3`.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: could not read or write the lease"),
            }
            tokio::time::sleep(self.lease_duration / 3).await;
        }
    }

    /// Renews until a renewal fails for a whole lease duration or someone else takes the
    /// lease; returns then (the caller stops reconciling, and exits so it restarts clean).
    pub async fn keep(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    if last_renewed.elapsed() >= self.lease_duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        format!("2026-01-01T00:00:{s}Z").parse().unwrap()
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at("00"))),
            lease_transitions: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_or_no_holder_is_acquired() {
        assert_eq!(decide(None, "me", at("00")), LeaseDecision::Acquire);
        assert_eq!(decide(Some(&LeaseSpec::default()), "me", at("00")), LeaseDecision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(decide(Some(&held_by("me", "00")), "me", at("59")), LeaseDecision::Renew);
    }

    #[test]
    fn a_live_lease_of_another_is_followed() {
        assert_eq!(
            decide(Some(&held_by("other", "10")), "me", at("20")),
            LeaseDecision::Follow { holder: "other".into() }
        );
    }

    #[test]
    fn an_expired_lease_of_another_is_taken_and_counted_as_a_transition() {
        let spec = held_by("other", "10");
        assert_eq!(decide(Some(&spec), "me", at("26")), LeaseDecision::Acquire);
        let next = next_spec(Some(&spec), "me", Duration::from_secs(15), at("26"));
        assert_eq!(next.holder_identity.as_deref(), Some("me"));
        assert_eq!(next.lease_transitions, Some(3));
        assert_eq!(next.acquire_time.unwrap().0, at("26"));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let spec = held_by("me", "10");
        let next = next_spec(Some(&spec), "me", Duration::from_secs(15), at("20"));
        assert_eq!(next.acquire_time.unwrap().0, at("00"));
        assert_eq!(next.renew_time.unwrap().0, at("20"));
        assert_eq!(next.lease_transitions, Some(2));
    }
}
