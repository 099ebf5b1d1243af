use super::*;

fn config(text: &str) -> RestoreSettings {
    let c = crate::config::Config::parse(text).unwrap();
    RestoreSettings::from_config(&c.restore).unwrap()
}

fn three_with_commands() -> RestoreSettings {
    let mut text = String::from("[restore]\ninitial-cluster-token = \"prod\"\n");
    for i in 1..=3 {
        text.push_str(&format!(
            "[[restore.members]]\nname = \"m{i}\"\npeer-url = \"http://127.0.0.1:238{i}\"\n\
             client-url = \"http://127.0.0.1:237{i}\"\ndata-dir = \"/srv/m{i}/data\"\n\
             etcd-start = \"start-etcd m{i}\"\netcd-stop = \"stop-etcd m{i}\"\n\
             kube-start = \"start-kube\"\nkube-stop = \"stop-kube\"\n"
        ));
    }
    config(&text)
}

fn backup() -> BackupRef {
    BackupRef {
        id: "20261122T054700.123Z-8e4e0ddc".into(),
        revision: 4242,
        total_key: 100,
        live_keys: 90,
        members: Vec::new(),
        db_size: 1 << 20,
        etcd_version: "3.5.30".into(),
        bundle_files: Vec::new(),
    }
}

fn probes(can_bump: bool) -> Vec<Probe> {
    (1..=3)
        .map(|i| Probe {
            member: format!("m{i}"),
            tool: "/usr/bin/etcdutl".into(),
            version: "3.5.30".into(),
            can_bump,
            can_check_v2store: false,
            missing_bundle_files: Vec::new(),
        })
        .collect()
}

fn commands(p: &Plan, step: u8) -> Vec<String> {
    p.steps[usize::from(step) - 1]
        .actions
        .iter()
        .filter_map(|a| a.command.clone())
        .collect()
}

#[test]
fn every_member_restores_the_same_file_with_the_same_cluster_and_token() {
    let s = three_with_commands();
    let p = make(&s, &backup(), &probes(true), "20261122T060000Z");
    assert_eq!(p.steps.len(), 8);
    assert_eq!(
        p.initial_cluster,
        "m1=http://127.0.0.1:2381,m2=http://127.0.0.1:2382,m3=http://127.0.0.1:2383"
    );
    assert_eq!(p.bump_revision, DEFAULT_BUMP);
    let restores: Vec<String> = commands(&p, 5)
        .into_iter()
        .filter(|c| c.contains("snapshot restore"))
        .collect();
    assert_eq!(restores.len(), 3);
    assert!(restores[0].starts_with(
        "if [ -e /srv/m1/data.lifeboat-20261122T060000Z ] && [ -e /srv/m1/data ] && \
         [ ! -e /srv/m1/data.lifeboat-new-20261122T060000Z ]; then echo "
    ));
    assert!(restores[0].contains(
        "; if [ -e /srv/m1/data.lifeboat-new-20261122T060000Z ]; then mv -- \
         /srv/m1/data.lifeboat-new-20261122T060000Z \
         /srv/m1/data.lifeboat-new-20261122T060000Z.partial-$(date +%s)-$$ || exit 1; fi; "
    ));
    assert_eq!(
        restores[0].rsplit("; ").next().unwrap(),
        "/usr/bin/etcdutl snapshot restore \
         /srv/m1/lifeboat-restore-20261122T054700.123Z-8e4e0ddc-m1.db --name m1 --data-dir \
         /srv/m1/data.lifeboat-new-20261122T060000Z --initial-cluster \
         m1=http://127.0.0.1:2381,m2=http://127.0.0.1:2382,m3=http://127.0.0.1:2383 \
         --initial-cluster-token prod --initial-advertise-peer-urls http://127.0.0.1:2381 \
         --bump-revision 1000000000 --mark-compacted"
    );
    for r in &restores {
        assert!(r.contains("--initial-cluster m1=http://127.0.0.1:2381,m2="));
        assert!(r.contains("--initial-cluster-token prod"));
        assert!(r.contains("/lifeboat-restore-20261122T054700.123Z-8e4e0ddc-m"));
    }
    // The old data dir is moved aside, never removed (the swap is run for real below).
    assert!(commands(&p, 5).iter().any(|c| {
        c.contains("mv -- /srv/m2/data /srv/m2/data.lifeboat-20261122T060000Z || exit 1")
    }));
    assert!(
        p.steps
            .iter()
            .flat_map(|s| &s.actions)
            .all(|a| a.command.as_deref().is_none_or(|c| !c.contains("rm ")))
    );
    assert_eq!(commands(&p, 3), ["stop-kube", "stop-kube", "stop-kube"]);
    assert_eq!(
        commands(&p, 4),
        ["stop-etcd m1", "stop-etcd m2", "stop-etcd m3"]
    );
    assert_eq!(
        commands(&p, 6),
        ["start-etcd m1", "start-etcd m2", "start-etcd m3"]
    );
    assert_eq!(commands(&p, 7), ["start-kube", "start-kube", "start-kube"]);
    let text = render(&p);
    assert!(
        text.contains("\n5. Restore the same snapshot on every member\n"),
        "{text}"
    );
    assert!(
        text.contains("[m3 @ local] stop etcd\n       $ stop-etcd m3\n"),
        "{text}"
    );
}

#[test]
fn a_tool_without_bump_support_means_no_bump_and_says_what_that_means() {
    let s = three_with_commands();
    let mut pr = probes(true);
    pr[1] = Probe {
        member: "m2".into(),
        tool: "/usr/bin/etcdctl".into(),
        version: "3.4.23".into(),
        can_bump: false,
        can_check_v2store: false,
        missing_bundle_files: Vec::new(),
    };
    let p = make(&s, &backup(), &pr, "T");
    assert_eq!(p.bump_revision, 0);
    assert!(
        p.notes[0].contains("m2 (/usr/bin/etcdctl 3.4.23)"),
        "{:?}",
        p.notes
    );
    assert!(p.notes[0].contains("stale"), "{:?}", p.notes);
    let restores = commands(&p, 5);
    assert!(restores.iter().all(|c| !c.contains("--bump-revision")));
    assert!(
        restores
            .iter()
            .any(|c| c.contains("ETCDCTL_API=3 /usr/bin/etcdctl snapshot restore"))
    );
}

#[test]
fn systemd_and_static_pods_are_stopped_and_checked() {
    let s = config(
        "[[restore.members]]\nname = \"cp1\"\npeer-url = \"https://10.0.0.1:2380\"\n\
         client-url = \"https://10.0.0.1:2379\"\ndata-dir = \"/var/lib/etcd\"\n\
         host = \"ssh://root@10.0.0.1\"\n\
         etcd-static-pod-manifest = \"/etc/kubernetes/manifests/etcd.yaml\"\n\
         kube-static-pod-manifests = [\"/etc/kubernetes/manifests/kube-apiserver.yaml\"]\n\
         [[restore.members]]\nname = \"cp2\"\npeer-url = \"https://10.0.0.2:2380\"\n\
         client-url = \"https://10.0.0.2:2379\"\ndata-dir = \"/var/lib/etcd\"\n\
         etcd-systemd-unit = \"etcd\"\nkube-systemd-units = [\"kubelet\", \"kube-proxy\"]\n",
    );
    let p = make(&s, &backup(), &[], "T");
    assert_eq!(
        commands(&p, 3),
        [
            "if [ -e /etc/kubernetes/manifests/kube-apiserver.yaml ]; then mkdir -p \
             /etc/kubernetes/manifests.lifeboat-stopped && mv \
             /etc/kubernetes/manifests/kube-apiserver.yaml \
             /etc/kubernetes/manifests.lifeboat-stopped/kube-apiserver.yaml; fi",
            "test -z \"$(crictl ps -q --name '^kube-apiserver$')\"",
            "systemctl stop kubelet kube-proxy",
            "! systemctl is-active --quiet kubelet && ! systemctl is-active --quiet kube-proxy",
        ]
    );
    assert_eq!(
        commands(&p, 6),
        [
            "if [ -e /etc/kubernetes/manifests.lifeboat-stopped/etcd.yaml ]; then mv \
             /etc/kubernetes/manifests.lifeboat-stopped/etcd.yaml \
             /etc/kubernetes/manifests/etcd.yaml; fi",
            "systemctl start etcd",
        ]
    );
    assert_eq!(p.steps[2].actions[0].host, "ssh://root@10.0.0.1");
    // Without probes the tool is assumed to be etcdutl on the PATH.
    assert!(commands(&p, 5)[0].contains("etcdutl snapshot restore"));
}

#[test]
fn the_free_space_check_passes_and_fails_for_real() {
    let run = |bytes: u64| {
        std::process::Command::new("sh")
            .args(["-c", &free_space_check(Path::new("/tmp"), bytes)])
            .output()
            .unwrap()
    };
    assert!(run(1).status.success());
    let out = run(u64::MAX / 4);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KiB free in /tmp"));
}

#[test]
fn bad_member_descriptions_are_clear_errors() {
    let base = "[[restore.members]]\nname = \"m1\"\npeer-url = \"http://a:2380\"\n\
                client-url = \"http://a:2379\"\ndata-dir = \"/var/lib/etcd\"\n";
    let err = |extra: &str| {
        let c = crate::config::Config::parse(&format!("{base}{extra}")).unwrap();
        RestoreSettings::from_config(&c.restore).unwrap_err()
    };
    assert!(err("").contains("say how etcd is controlled"));
    let c = crate::config::Config::parse(
        &base
            .replace("http://a:2380", "a:2380")
            .replace("data-dir", "etcd-systemd-unit = \"etcd\"\ndata-dir"),
    )
    .unwrap();
    assert!(
        RestoreSettings::from_config(&c.restore)
            .unwrap_err()
            .contains("peer-url \"a:2380\" must be an http:// or https:// URL")
    );
    assert!(err("etcd-start = \"x\"\n").contains("go together"));
    assert!(
        err("etcd-systemd-unit = \"etcd\"\netcd-start = \"x\"\netcd-stop = \"y\"\n")
            .contains("choose one way")
    );
    assert!(err("etcd-systemd-unit = \"etcd\"\nhost = \"cp1\"\n").contains("ssh://"));
    let c = crate::config::Config::parse("[restore]\n").unwrap();
    assert!(
        RestoreSettings::from_config(&c.restore)
            .unwrap_err()
            .contains("no [[restore.members]]")
    );
    let twice = format!("{base}etcd-systemd-unit = \"etcd\"\n{base}etcd-systemd-unit = \"etcd\"\n");
    let c = crate::config::Config::parse(&twice).unwrap();
    assert!(
        RestoreSettings::from_config(&c.restore)
            .unwrap_err()
            .contains("twice")
    );
    let other = base.replace("name = \"m1\"", "name = \"m2\"");
    let c = crate::config::Config::parse(&format!(
        "{base}etcd-systemd-unit = \"etcd\"\n{other}etcd-systemd-unit = \"etcd\"\n"
    ))
    .unwrap();
    assert!(
        RestoreSettings::from_config(&c.restore)
            .unwrap_err()
            .contains("also another member's")
    );
}

fn sh(script: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap()
}

/// Step 5's restore and swap, run for real and then again (a resume after the swap,
/// or --from-step 5): the second run moves nothing, nothing is nested, nothing lost.
#[test]
fn step_5_is_safe_to_repeat_and_never_nests_directories() {
    let dir = tempfile::tempdir().unwrap();
    // A name that needs quoting, written with a trailing '/'.
    let data = dir.path().join("my 'etcd' data");
    let text = format!(
        "[[restore.members]]\nname = \"m1\"\npeer-url = \"http://a:2380\"\n\
         client-url = \"http://a:2379\"\ndata-dir = {:?}\netcd-systemd-unit = \"etcd\"\n\
         etcdutl = \"/bin/true\"\n",
        format!("{}/", data.display())
    );
    let s = config(&text);
    let p = make(&s, &backup(), &[], "T1");
    let paths = member_paths(&s.members[0], &backup().id, "T1");
    // Beside the data dir, not inside it, although it was written with a '/'.
    assert_eq!(paths.new_dir.parent(), Some(dir.path()));
    assert_eq!(paths.old_dir.parent(), Some(dir.path()));
    let step5 = commands(&p, 5);
    let (restore, swap) = (&step5[0], &step5[1]);
    std::fs::create_dir_all(data.join("member")).unwrap();
    std::fs::write(data.join("member/old"), b"old data").unwrap();
    // The restore tool (here /bin/true) writes the new dir: stand in for it.
    let restore_for_real = || {
        let out = sh(restore);
        assert!(out.status.success(), "{out:?}");
        if !String::from_utf8_lossy(&out.stdout).contains("restored already") {
            std::fs::create_dir_all(paths.new_dir.join("member")).unwrap();
            std::fs::write(paths.new_dir.join("member/new"), b"restored").unwrap();
        }
    };
    restore_for_real();
    let out = sh(swap);
    assert!(out.status.success(), "{out:?}");
    let check = || {
        assert_eq!(std::fs::read(data.join("member/new")).unwrap(), b"restored");
        assert_eq!(
            std::fs::read(paths.old_dir.join("member/old")).unwrap(),
            b"old data"
        );
        assert!(!paths.new_dir.exists());
        let mut inside: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        inside.extend(
            std::fs::read_dir(&paths.old_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name()),
        );
        assert_eq!(inside, ["member", "member"], "a directory was nested");
    };
    check();
    // Again, as a resume would: the restore and the swap find it done.
    restore_for_real();
    let out = sh(swap);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("in place already"));
    check();
    // A member without a data dir before: the swap records itself, and is then done.
    let fresh = dir.path().join("fresh");
    let s = config(&text.replace(
        &format!("{}/", data.display()),
        &fresh.display().to_string(),
    ));
    let p = make(&s, &backup(), &[], "T2");
    let paths = member_paths(&s.members[0], &backup().id, "T2");
    let swap = &commands(&p, 5)[1];
    std::fs::create_dir_all(&paths.new_dir).unwrap();
    assert!(sh(swap).status.success());
    assert!(fresh.is_dir() && paths.old_dir.is_dir() && !paths.new_dir.exists());
    assert!(sh(swap).status.success());
    assert!(fresh.is_dir() && std::fs::read_dir(&fresh).unwrap().next().is_none());
    // Both the old dir and a new one about to replace a data dir: refused, not nested.
    std::fs::create_dir_all(&paths.new_dir).unwrap();
    let out = sh(swap);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("by hand"),
        "{out:?}"
    );
    assert!(paths.new_dir.is_dir() && std::fs::read_dir(&paths.old_dir).unwrap().next().is_none());
}

/// Values that would reach a path or a shell are refused at `restore plan`, naming
/// the member and the field; a hostile backup id never leaves its directory.
#[test]
fn hostile_names_are_refused_or_made_plain() {
    let member = |name: &str, extra: &str| {
        format!(
            "[[restore.members]]\nname = {name:?}\npeer-url = \"http://a:2380\"\n\
             client-url = \"http://a:2379\"\netcd-systemd-unit = \"etcd\"\n{extra}"
        )
    };
    let err = |text: String| {
        let c = crate::config::Config::parse(&text).unwrap();
        RestoreSettings::from_config(&c.restore).unwrap_err()
    };
    let dd = "data-dir = \"/var/lib/etcd\"\n";
    for (name, extra, says) in [
        ("x;reboot;", dd.to_owned(), "name \"x;reboot;\" is refused"),
        ("../m1", dd.to_owned(), "name \"../m1\" is refused"),
        ("m1", "data-dir = \"/var/lib/../etcd\"\n".into(), "data-dir"),
        ("m1", "data-dir = \"var/lib/etcd\"\n".into(), "data-dir"),
        (
            "m1",
            format!("{dd}host = \"ssh://-oProxyCommand=sh@cp1\"\n"),
            "ssh user",
        ),
        ("m1", format!("{dd}host = \"ssh://root@-x\"\n"), "ssh host"),
        (
            "m1",
            format!("{dd}host = \"ssh://root@cp1;id\"\n"),
            "ssh host",
        ),
        (
            "m1",
            format!("{dd}etcdutl = \"/bin/etcdutl\\n\"\n"),
            "etcdutl",
        ),
    ] {
        let e = err(member(name, &extra));
        assert!(
            e.contains("[[restore.members]]")
                && e.contains(&format!("{name:?}"))
                && e.contains(says),
            "{name} {extra}: {e}"
        );
    }
    let s = three_with_commands();
    for hostile in ["x;reboot;", "$(touch pwned)", "../../../etc/cron.d/x"] {
        let mut b = backup();
        b.id = hostile.into();
        let p = make(&s, &b, &probes(true), "T");
        let paths = member_paths(&s.members[0], hostile, "T");
        assert_eq!(paths.snapshot.parent(), Some(Path::new("/srv/m1")));
        let name = paths
            .snapshot
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            !name.contains([';', '$', '(', '/']) && !name.contains(".."),
            "{name}"
        );
        for c in commands(&p, 5) {
            assert!(!c.contains(hostile), "{c}");
        }
    }
}

#[test]
fn members_missing_bundle_files_are_named() {
    let s = three_with_commands();
    let mut pr = probes(true);
    pr[2].missing_bundle_files = vec!["/etc/kubernetes/pki/etcd/ca.key".into()];
    let p = make(&s, &backup(), &pr, "T");
    let note = p
        .notes
        .iter()
        .find(|n| n.contains("bundle files"))
        .expect("a note on the missing bundle file");
    assert!(
        note.contains("member m3 lacks 1") && note.contains("/etc/kubernetes/pki/etcd/ca.key"),
        "{note}"
    );
    assert!(!p.notes.iter().any(|n| n.contains("member m1 lacks")));
}

#[test]
fn versions_are_read_to_their_minor() {
    assert_eq!(minor_version("3.6.1"), Some((3, 6)));
    assert_eq!(minor_version("v3.6.0-rc.1"), Some((3, 6)));
    assert_eq!(
        minor_version("3.5.30 (backup X at revision 1 + 2 segments)"),
        Some((3, 5))
    );
    assert_eq!(minor_version("unknown (a snapshot file)"), None);
    assert_eq!(minor_version("3"), None);
}

#[test]
fn a_tool_of_another_minor_version_is_named_and_v2store_is_checked_where_it_can_be() {
    let s = three_with_commands();
    let mut b = backup();
    b.etcd_version = "3.6.1".into();
    let mut pr = probes(true);
    pr[0].version = "3.6.4".into();
    pr[0].can_check_v2store = true;
    let p = make(&s, &b, &pr, "T");
    let notes = p.notes.join("\n");
    assert!(notes.contains("m2") && notes.contains("m3"), "{notes}");
    assert!(!notes.contains("m1 ("), "{notes}");
    assert!(
        notes.contains("3.6.1") && notes.contains("3.6.x"),
        "{notes}"
    );
    let step5 = commands(&p, 5);
    let checks: Vec<&String> = step5
        .iter()
        .filter(|c| c.contains("check v2store"))
        .collect();
    assert_eq!(checks.len(), 1, "{step5:?}");
    assert!(
        checks[0].contains("/usr/bin/etcdutl check v2store --data-dir"),
        "{}",
        checks[0]
    );
    assert!(checks[0].contains(".lifeboat-new-T"), "{}", checks[0]);
    // The same minor: nothing to say.
    b.etcd_version = "3.5.1".into();
    let p = make(&s, &b, &probes(true), "T");
    assert!(
        !p.notes.iter().any(|n| n.contains("minor")),
        "{:?}",
        p.notes
    );
}
