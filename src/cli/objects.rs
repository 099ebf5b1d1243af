//! The object-level commands: `get`, `objects`, `diff`, `restore keys`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{Failure, Format, IdentityArgs, StorageArgs, identities, open_repository, runtime};
use crate::config::Config;
use crate::etcd::{self, EtcdArgs, EtcdSettings};
use crate::fetch::{self, ScratchCopy};
use crate::objects::diff::{self, ChangeKind};
use crate::objects::get::{self, GetOptions, Header};
use crate::objects::kube::Keyring;
use crate::objects::list::{self, Listing};
use crate::objects::restore_keys::{self, Target};
use crate::objects::{KeyRange, Selection};
use crate::output;
use crate::repository::Manifest;
use crate::snapshot::ScanOptions;

/// Where the snapshot comes from: `--backup ID|latest|FILE`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotSource {
    /// Backup id, `latest`, or a snapshot file.
    #[arg(long, default_value = "latest", value_name = "ID|latest|FILE")]
    pub backup: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Where a backup is downloaded to while it is read (default: [backup] spool-dir,
    /// else the temp dir); it is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Do not check a snapshot file's sha256 trailer (a backup is always checked).
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// `lifeboat get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// The end of the range (exclusive), as etcdctl's second argument.
    pub range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Every key from KEY on.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// Read at this revision, as far back as the snapshot's history reaches.
    #[arg(long, value_name = "N")]
    pub rev: Option<i64>,
    /// Keys without their values.
    #[arg(long)]
    pub keys_only: bool,
    /// Values without their keys (simple output).
    #[arg(long)]
    pub print_value_only: bool,
    /// At most this many keys (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[command(flatten)]
    pub source: SnapshotSource,
}

/// Which Kubernetes objects, by key.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// A resource as the key names it (`pods`, `example.com/widgets`) or as kubectl
    /// does (`widgets`, `widgets.example.com`, `deployments.apps`).
    #[arg(long, value_name = "R")]
    pub resource: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The apiserver's --etcd-prefix.
    #[arg(long, default_value = "/registry", value_name = "PREFIX")]
    pub etcd_prefix: String,
}

impl SelectArgs {
    fn selection(&self) -> Selection {
        Selection::new(
            Some(&self.etcd_prefix),
            self.namespace.clone(),
            self.resource.clone(),
            self.name.clone(),
        )
    }

    fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.resource.is_none() && self.name.is_none()
    }
}

/// Which Kubernetes objects, and how to read them.
#[derive(Debug, Clone, Args)]
pub struct ObjectArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// kube-apiserver's EncryptionConfiguration, to read values encrypted at rest
    /// (aescbc, aesgcm, secretbox).
    #[arg(long, value_name = "FILE")]
    pub encryption_config: Option<PathBuf>,
}

impl ObjectArgs {
    fn selection(&self) -> Selection {
        self.select.selection()
    }

    fn keyring(&self) -> Result<Option<Keyring>, Failure> {
        match &self.encryption_config {
            Some(p) => Ok(Some(
                Keyring::load(p).map_err(|e| Failure::Usage(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }
}

/// `lifeboat objects`.
#[derive(Debug, Args)]
pub struct ObjectsArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    /// Read at this revision, as far back as the snapshot's history reaches.
    #[arg(long, value_name = "N")]
    pub rev: Option<i64>,
    #[command(flatten)]
    pub source: SnapshotSource,
}

/// `lifeboat diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Before: a backup id, `latest`, a snapshot file, or `live`.
    pub a: String,
    /// After: a backup id, `latest`, a snapshot file, or `live` (default).
    #[arg(default_value = "live")]
    pub b: String,
    #[command(flatten)]
    pub objects: ObjectArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// The live cluster, for `live` (etcdctl's flags).
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// `lifeboat restore keys`.
#[derive(Debug, Args)]
pub struct RestoreKeysArgs {
    /// Every key under this prefix, Kubernetes or not.
    #[arg(long, value_name = "P", conflicts_with_all = ["namespace", "resource", "name"])]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Also replace keys whose live value differs from the backup's.
    #[arg(long)]
    pub overwrite: bool,
    /// Print what would be written and skipped; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write into a cluster whose id is not the backup's.
    #[arg(long)]
    pub force_other_cluster: bool,
    #[command(flatten)]
    pub source: SnapshotSource,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// A snapshot file to read: the operator's, or a backup downloaded for the command.
/// Where one side of a diff came from, kept to read the values of what differs.
enum Side {
    Live(Box<etcd_client::Client>, String),
    File(Box<Opened>),
}

struct Opened {
    path: PathBuf,
    _copy: Option<ScratchCopy>,
    manifest: Option<Manifest>,
}

fn open(
    which: &str,
    storage: &StorageArgs,
    identity: &IdentityArgs,
    spool_dir: Option<&Path>,
    config: &Config,
    rt: &tokio::runtime::Runtime,
) -> Result<Opened, Failure> {
    let path = Path::new(which);
    if path.is_file() {
        return Ok(Opened {
            path: path.to_path_buf(),
            _copy: None,
            manifest: None,
        });
    }
    let repo = open_repository(storage, config)?;
    let m = rt.block_on(repo.manifest(which))?;
    let scratch = spool_dir
        .map(Path::to_path_buf)
        .or_else(|| config.backup.spool_dir.clone())
        .unwrap_or_else(std::env::temp_dir);
    let ids = identities(identity, config)?;
    let copy = rt.block_on(fetch::fetch_scratch(&repo, &m, &scratch, ids.as_ref()))?;
    Ok(Opened {
        path: copy.path().to_path_buf(),
        _copy: Some(copy),
        manifest: Some(m),
    })
}

impl SnapshotSource {
    fn open(&self, config: &Config, rt: &tokio::runtime::Runtime) -> Result<Opened, Failure> {
        open(
            &self.backup,
            &self.storage,
            &self.identity,
            self.spool_dir.as_deref(),
            config,
            rt,
        )
    }

    fn scan(&self) -> ScanOptions {
        ScanOptions {
            // A backup was checked completely as it was downloaded.
            verify_trailer: !self.skip_hash_check && Path::new(&self.backup).is_file(),
        }
    }
}

fn hex_id(text: &str) -> u64 {
    u64::from_str_radix(text, 16).unwrap_or(0)
}

pub(super) fn get(
    cli_format: Format,
    args: &GetArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    if let Some(rev) = args.rev
        && rev < 1
    {
        return Err(Failure::Usage(format!("--rev {rev}: revisions start at 1")));
    }
    let key = args.key.as_bytes();
    let range = match (&args.range_end, args.prefix, args.from_key) {
        (Some(end), _, _) => KeyRange::between(key, end.as_bytes()),
        (None, true, _) => KeyRange::prefix(key),
        (None, _, true) => KeyRange::from_key(key),
        (None, false, false) => KeyRange::key(key),
    };
    let rt = runtime()?;
    let opened = args.source.open(config, &rt)?;
    let options = GetOptions {
        range,
        revision: args.rev,
        keys_only: args.keys_only,
        limit: args.limit,
        scan: args.source.scan(),
    };
    let result = get::get(&opened.path, &options)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let out: &mut dyn Write = &mut out;
    match cli_format {
        Format::Json => {
            let header = opened
                .manifest
                .as_ref()
                .map(|m| Header {
                    cluster_id: hex_id(&m.cluster_id),
                    member_id: hex_id(&m.member_id),
                    raft_term: m.raft_term,
                })
                .unwrap_or_default();
            get::write_json(out, &result, header)
        }
        Format::Simple => get::write_simple(out, &result, args.print_value_only),
        Format::Table => {
            return Err(Failure::Usage(
                "get prints -w simple or -w json, as etcdctl's get does".into(),
            ));
        }
    }
    .and_then(|()| out.flush())
    .map_err(Failure::Output)
}

pub(super) fn objects(
    cli_format: Format,
    args: &ObjectsArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let keyring = args.objects.keyring()?;
    let rt = runtime()?;
    let opened = args.source.open(config, &rt)?;
    let (path, scan, selection) = (&opened.path, args.source.scan(), args.objects.selection());
    if cli_format == Format::Json {
        let listing = list::list_rendered(path, scan, &selection, args.rev, keyring.as_ref())?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        let printed = listing
            .write(&mut out)
            .and_then(|()| out.flush())
            .map_err(Failure::Output);
        std::mem::forget(listing); // as below
        return printed;
    }
    let listing = list::list(path, scan, &selection, args.rev, keyring.as_ref())?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let printed = output::objects::listing(&mut out, cli_format, &listing)
        .and_then(|()| out.flush())
        .map_err(Failure::Output);
    // The command ends here, and the process with it: freeing a quarter of a million
    // rows one allocation at a time would take a sixth of the run.
    std::mem::forget(listing);
    printed
}

pub(super) fn diff(
    cli_format: Format,
    args: &DiffArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let keyring = args.objects.keyring()?;
    let selection = args.objects.selection();
    let rt = runtime()?;
    // A side's listing, and for the live cluster the client that listed it: its rows
    // have revisions but no values yet, only those that differ are read.
    let side = |which: &str| -> Result<(Listing, Side), Failure> {
        if which == "live" && !Path::new(which).is_file() {
            let settings = EtcdSettings::resolve(&args.etcd, &config.etcd)?;
            let (mut client, endpoint) = rt.block_on(etcd::connect_any(&settings))?;
            let (listing, _) = rt
                .block_on(crate::objects::live::list_keys(
                    &mut client,
                    &endpoint,
                    &selection,
                ))
                .map_err(Failure::Objects)?;
            return Ok((listing, Side::Live(Box::new(client), endpoint)));
        }
        let opened = open(
            which,
            &args.storage,
            &args.identity,
            args.spool_dir.as_deref(),
            config,
            &rt,
        )?;
        let scan = ScanOptions {
            verify_trailer: opened.manifest.is_none(),
        };
        let listing = list::list_keys(&opened.path, scan, &selection, None)?;
        Ok((listing, Side::File(Box::new(opened))))
    };
    // Both sides at once, one on each core.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| side(&args.a));
        let b = side(&args.b);
        (a.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), b)
    });
    let ((a, a_side), (b, b_side)) = (a?, b?);
    let mut d = diff::diff(a, b);
    // The values of what differs: a deleted object as A had it, the others as B has them.
    for (side, deleted, revision) in [(a_side, true, d.a_revision), (b_side, false, d.b_revision)] {
        let rows = d
            .changes
            .iter_mut()
            .filter(|c| (c.change == ChangeKind::Deleted) == deleted)
            .map(|c| &mut c.row)
            .collect();
        match side {
            Side::Live(client, endpoint) => rt
                .block_on(crate::objects::live::fill(
                    &client,
                    &endpoint,
                    revision,
                    rows,
                    keyring.as_ref(),
                ))
                .map_err(Failure::Objects)?,
            Side::File(opened) => {
                list::fill(&opened.path, revision, &selection, rows, keyring.as_ref())?
            }
        }
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let printed = output::objects::diff(&mut out, cli_format, &args.a, &args.b, &d)
        .and_then(|()| out.flush())
        .map_err(Failure::Output);
    std::mem::forget(d); // as in `objects`
    printed
}

pub(super) fn restore_keys(
    cli_format: Format,
    args: &RestoreKeysArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let target = match &args.prefix {
        Some(p) if p.is_empty() => {
            return Err(Failure::Usage(
                "--prefix \"\" would restore every key: give a prefix, or --namespace, \
                 --resource or --name"
                    .into(),
            ));
        }
        Some(p) => Target::Prefix(p.as_bytes().to_vec()),
        None if args.select.is_empty() => {
            return Err(Failure::Usage(
                "say which keys: --prefix P, or --namespace NS, --resource R, --name N".into(),
            ));
        }
        None => Target::Objects(args.select.selection()),
    };
    let settings = EtcdSettings::resolve(&args.etcd, &config.etcd)?;
    let rt = runtime()?;
    let opened = args.source.open(config, &rt)?;
    let (mut client, endpoint) = rt.block_on(etcd::connect_any(&settings))?;
    let status = rt.block_on(etcd::member_status(&mut client, &endpoint))?;
    let live_id = format!("{:x}", status.cluster_id);
    match opened.manifest.as_ref().map(|m| m.cluster_id.as_str()) {
        _ if args.force_other_cluster => {}
        Some(id) if id == live_id => {}
        Some(id) => {
            return Err(Failure::Objects(format!(
                "backup {} is of cluster {id}, but {endpoint} belongs to cluster {live_id}: \
                 writing one cluster's keys into another is refused; if that is what you \
                 want (a cluster rebuilt from a snapshot gets a new id), add \
                 --force-other-cluster",
                opened.manifest.as_ref().map_or("", |m| m.id.as_str())
            )));
        }
        None => {
            return Err(Failure::Objects(format!(
                "{} is a snapshot file, which does not record its cluster's id, so lifeboat \
                 cannot check that it comes from cluster {live_id} ({endpoint}); add \
                 --force-other-cluster once you are sure",
                opened.path.display()
            )));
        }
    }
    let planned = restore_keys::plan(&opened.path, args.source.scan(), &target)?;
    let summary = rt
        .block_on(restore_keys::restore(
            &mut client,
            &planned,
            args.overwrite,
            args.dry_run,
        ))
        .map_err(Failure::Objects)?;
    output::objects::restored_keys(out, cli_format, &summary).map_err(Failure::Output)
}
