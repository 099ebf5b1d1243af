//! Cloud identities instead of long-lived keys, end to end on loopback. For AWS against
//! moto's STS and S3 (support::moto): no `AWS_ACCESS_KEY_ID` anywhere, and moto's S3
//! checks every request's signature, session token and the role's policy.
//!
//! - AWS web identity (IRSA): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, the STS
//!   endpoint from `AWS_ENDPOINT_URL_STS`; object_store calls AssumeRoleWithWebIdentity
//!   with the token file's content and signs S3 requests with what STS returned.
//! - EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; the agent's side is a loopback HTTP server
//!   that hands out credentials moto's STS issued, only for the right token.
//! - Azure workload identity, against Azurite with OAuth (support::azurite,
//!   support::entra).

use crate::backup::round_trip;
use crate::support;

use std::path::Path;
use std::sync::atomic::Ordering;

use support::azurite::Azurite;
use support::entra::TokenEndpoint;
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, ok, run, text};
use support::moto::{CredentialsAgent, Moto};
use support::tools::EtcdVersion;

/// A projected ServiceAccount token looks like this (a JWT); moto does not check it.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06bGlmZWJvYXQifQ.c2lnbmF0dXJl";
/// How every session token of moto's STS starts.
const MOTO_SESSION_TOKEN_PREFIX: &str = "FQoGZXIvYXdzEBYaD";

fn token_file(dir: &Path, content: &str) -> std::path::PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, content).expect("write token file");
    path
}

/// Nothing secret in what lifeboat printed: not the token, no session token, no key.
fn assert_no_secrets(all: &str, moto: &Moto) {
    assert!(
        !all.contains(TOKEN),
        "the web identity token was printed: {all}"
    );
    assert!(
        !all.contains(MOTO_SESSION_TOKEN_PREFIX),
        "a session token was printed: {all}"
    );
    let secret = moto.role_credentials["SecretAccessKey"]
        .as_str()
        .expect("secret");
    assert!(!all.contains(secret), "a secret key was printed: {all}");
}

#[test]
fn aws_web_identity_backs_up_with_credentials_from_sts() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let token = token_file(dir.path(), TOKEN);
    let env = moto.web_identity_env(&moto.role_arn, &token);
    assert!(env.iter().all(|(k, _)| !k.contains("ACCESS_KEY")));
    let url = moto.url("etcd");
    // backup, fetch, restore with the plain etcd tools, verify: all through STS.
    let m = round_trip(EtcdVersion::V3_5_30, &url, &env, None);
    let id = m["id"].as_str().expect("id");
    let mut objects = moto.objects();
    objects.sort();
    assert_eq!(
        objects,
        [
            format!("etcd/rt/manifests/{id}.json"),
            format!("etcd/rt/snapshots/{id}.db.zst")
        ]
    );
    // `list` finds it, and prints nothing secret even at -vv.
    let out = run(lifeboat(
        &["list", "--storage", &url, "--cluster", "rt", "-vv"],
        &env,
    ));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains(id), "{all}");
    assert_no_secrets(&all, &moto);
}

#[test]
fn aws_web_identity_refusals_name_the_problem() {
    let moto = Moto::start();
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let token = token_file(dir.path(), TOKEN);
    let url = moto.url("etcd");

    // A role whose policy allows nothing: STS issues credentials, S3 refuses them.
    let env = moto.web_identity_env(&moto.denied_role_arn, &token);
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &url,
            "-vv",
        ],
        &env,
    ));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("access denied"), "{all}");
    assert_no_secrets(&all, &moto);

    // Keys STS never issued (what a leaked or made-up key gets): moto's S3 refuses them,
    // so the successes elsewhere in this file are moto checking, not waving through.
    let mut env = moto.s3_env();
    env.extend([
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            "AKIAMADEUPMADEUP1234".to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "made-up-secret-made-up-secret-0".to_owned(),
        ),
    ]);
    let out = run(lifeboat(&["list", "--storage", &url], &env));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("access denied"), "{err}");
    assert!(!err.contains("made-up-secret"), "{err}");

    // A token file that is not there (the projected volume is not mounted): the error
    // names the file.
    let missing = dir.path().join("not-mounted/token");
    let env = moto.web_identity_env(&moto.role_arn, &missing);
    let out = run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &env,
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(moto.objects().is_empty(), "{:?}", moto.objects());
}

#[test]
fn eks_pod_identity_backs_up_with_the_agents_credentials() {
    let moto = Moto::start();
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let pod_token = "eks-pod-identity-token-0123456789";
    let agent = CredentialsAgent::start(pod_token, &moto.role_credentials);
    let env_with = |token: &Path| {
        let mut env = moto.s3_env();
        env.extend([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(), agent.url()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_owned(),
                token.display().to_string(),
            ),
        ]);
        env
    };
    let url = moto.url("etcd");
    let env = env_with(&token_file(dir.path(), pod_token));
    let out = ok(run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &url,
            "-vv",
        ],
        &env,
    )));
    ok(run(lifeboat(
        &["verify", "latest", "--storage", &url],
        &env,
    )));
    assert!(agent.served.load(Ordering::SeqCst) >= 2, "one per process");
    assert_eq!(agent.refused.load(Ordering::SeqCst), 0);
    assert_eq!(moto.objects().len(), 2, "{:?}", moto.objects());
    assert!(!out.contains(pod_token));

    // The agent refuses another token; the backup fails and says it found no credentials.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    let env = env_with(&token_file(&other, "not-the-pod-token"));
    let out = run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &env,
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(agent.refused.load(Ordering::SeqCst) >= 1);
    assert!(
        !err.contains(pod_token) && !err.contains("not-the-pod-token"),
        "{err}"
    );
    assert_eq!(moto.objects().len(), 2);
}

/// Azure workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
/// `AZURE_FEDERATED_TOKEN_FILE` (what the workload identity webhook injects) and
/// `AZURE_AUTHORITY_HOST`; object_store trades the token file's content for an access
/// token at the authority (support::entra, on loopback) and Azurite (`--oauth basic`,
/// HTTPS) takes that bearer token. No account key anywhere.
#[test]
fn azure_workload_identity_backs_up_with_a_token_from_the_authority() {
    let az = Azurite::start_with_oauth();
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let entra = TokenEndpoint::start(
        "72f988bf-0000-4000-8000-00000000a1b2",
        "5f0c1a2b-0000-4000-8000-00000000c3d4",
        TOKEN,
    );
    let env = az.workload_identity_env(&entra, &token_file(dir.path(), TOKEN));
    assert!(env.iter().all(|(k, _)| !k.contains("KEY")));
    let url = az.url("etcd");
    let m: serde_json::Value = serde_json::from_str(&ok(run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &url,
            "-w",
            "json",
        ],
        &env,
    ))))
    .expect("manifest JSON");
    let out = run(lifeboat(
        &["verify", "latest", "--storage", &url, "-vv"],
        &env,
    ));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains(m["id"].as_str().expect("id")), "{all}");
    assert!(
        !all.contains(TOKEN),
        "the federated token was printed: {all}"
    );
    assert!(entra.issued.load(Ordering::SeqCst) >= 2, "one per process");
    assert_eq!(entra.refused.load(Ordering::SeqCst), 0);
    assert_eq!(az.blob_names(false).len(), 2, "{:?}", az.blob_names(false));

    // Another token (a ServiceAccount the identity is not federated with): the authority
    // refuses it, the backup fails, nothing is written, no token is printed.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    let env = az.workload_identity_env(&entra, &token_file(&other, "eyJub3QiOiJmZWRlcmF0ZWQifQ"));
    let out = run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &env,
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(entra.refused.load(Ordering::SeqCst) >= 1);
    assert!(!err.contains("eyJub3QiOiJmZWRlcmF0ZWQifQ"), "{err}");
    assert_eq!(az.blob_names(true).len(), 2, "{:?}", az.blob_names(true));
}
