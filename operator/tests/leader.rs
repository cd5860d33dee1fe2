//! Leader election against the fake API server: one holder at a time, and takeover only once
//! the holder stops renewing.

mod support;

use std::time::Duration;

use fanout_operator::leader::LeaderElector;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::FakeApi;

fn elector(client: &kube::Client, who: &str) -> LeaderElector {
    LeaderElector::new(Api::<Lease>::namespaced(client.clone(), "fanout"), "fanout-operator", who, Duration::from_secs(15))
}

#[tokio::test]
async fn only_one_of_two_replicas_leads_until_the_lease_expires() {
    let (api, client) = FakeApi::start();
    let a = elector(&client, "operator-a");
    let b = elector(&client, "operator-b");

    assert!(a.try_acquire_or_renew().await.unwrap(), "first candidate takes the free lease");
    assert!(!b.try_acquire_or_renew().await.unwrap(), "second follows while the lease is live");
    assert!(a.try_acquire_or_renew().await.unwrap(), "holder renews");
    let lease = api.get("leases", "fanout", "fanout-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "operator-a");

    // operator-a stops renewing: its last renewal is now 20 s old, past the 15 s duration.
    api.update("leases", "fanout", "fanout-operator", |l| {
        l["spec"]["renewTime"] = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(20)).to_string().into();
    });
    assert!(b.try_acquire_or_renew().await.unwrap(), "an expired lease is taken over");
    let lease = api.get("leases", "fanout", "fanout-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "operator-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(!a.try_acquire_or_renew().await.unwrap(), "the old holder now follows");
}
