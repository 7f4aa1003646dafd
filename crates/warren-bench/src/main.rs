//! `warren-bench`: warren's backend latencies beside peers measured in the same run.
//!
//! Prints a markdown table and writes `bench/results/latest.json` (and `latest.md`). See
//! `bench/README.md` for what each row measures. Needs root.

mod peers;
mod report;
mod snapshot;
mod stats;
mod terminal;
mod warren;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peers::{PeerFiles, Unavailable};
use report::{Row, RowKind};
use warren_backend_dir::DirBackend;
use warren_backend_docker::{DockerBackend, DockerOptions};
use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::Backend;

const USAGE: &str = "\
usage: warren-bench [--iterations N] [--warmup N] [--rows NAME,...] [--json PATH] [--state-dir DIR]
                    [--snapshot-dir DIR] [--strict]

Times warren's backends (ns, dir) and peers (bare echo, unshare, bwrap, runc, docker) in one run,
and warren's snapshot create/restore beside tar | zstd on a generated workspace, and the browser
terminal's keystroke echo and throughput beside ssh to a loopback sshd; prints a markdown table and
writes JSON. Needs root.

  --iterations N   timed iterations per row (default 200; snapshot rows: at most 5, 1 warm-up)
  --warmup N       untimed iterations first (default 5)
  --rows LIST      only rows with a word starting with one of these comma-separated words
                   (e.g. ns,bwrap; 'ns exec' as a phrase)
  --json PATH      where to write the JSON (default bench/results/latest.json; the .md beside it)
  --state-dir DIR  warren state directory for the run (default: a fresh temporary one, removed after)
  --snapshot-dir DIR  where the snapshot rows generate, archive and extract (default: /dev/shm when
                   it is a tmpfs, else the temporary directory); the table names its file system
  --strict         exit 1 if a row failed or missed its target
";

#[derive(Debug)]
struct Args {
    iterations: usize,
    warmup: usize,
    rows: Vec<String>,
    json: PathBuf,
    state_dir: Option<PathBuf>,
    snapshot_dir: Option<PathBuf>,
    strict: bool,
}

/// `bench/results/latest.json` in the checkout this binary was built from.
fn default_json() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().and_then(Path::parent).unwrap_or(crate_dir);
    root.join("bench/results/latest.json")
}

fn parse_args(args: Vec<OsString>) -> Result<Args, String> {
    let mut a = Args {
        iterations: 200,
        warmup: 5,
        rows: vec![],
        json: default_json(),
        state_dir: None,
        snapshot_dir: None,
        strict: false,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg.into_string().map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().and_then(|v| v.into_string().ok()).ok_or(format!("{flag} needs a value")),
            }
        };
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: {v:?} is not a whole number"));
        match flag.as_str() {
            "--iterations" | "-n" => a.iterations = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            "--rows" => {
                a.rows = value()?.split(',').map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect()
            }
            "--json" => a.json = PathBuf::from(value()?),
            "--state-dir" => a.state_dir = Some(PathBuf::from(value()?)),
            "--snapshot-dir" => a.snapshot_dir = Some(PathBuf::from(value()?)),
            "--strict" => a.strict = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if a.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    Ok(a)
}

/// Which backend a warren row drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Ns,
    Dir,
    Docker,
}

/// One warren row: what it runs and whom it is compared with.
#[derive(Debug)]
struct WarrenRow {
    name: &'static str,
    backend: Which,
    cold: bool,
    user: &'static str,
    uid: u32,
    /// Peers to compare with, first one that has numbers wins.
    peers: &'static [&'static str],
    /// The target for the p50, ms.
    target_p50_ms: Option<f64>,
}

const WARREN_ROWS: &[WarrenRow] = &[
    WarrenRow {
        name: "ns cold cycle",
        backend: Which::Ns,
        cold: true,
        user: "bench_ns_cold",
        uid: 2_999_001,
        peers: &[peers::RUNC, peers::BWRAP],
        target_p50_ms: Some(5.0),
    },
    WarrenRow {
        name: "ns exec",
        backend: Which::Ns,
        cold: false,
        user: "bench_ns_exec",
        uid: 2_999_002,
        peers: &[peers::BWRAP, peers::UNSHARE],
        target_p50_ms: Some(1.5),
    },
    WarrenRow {
        name: "dir cold cycle",
        backend: Which::Dir,
        cold: true,
        user: "bench_dir_cold",
        uid: 2_999_003,
        peers: &[peers::BARE],
        target_p50_ms: None,
    },
    WarrenRow {
        name: "dir exec",
        backend: Which::Dir,
        cold: false,
        user: "bench_dir_exec",
        uid: 2_999_004,
        peers: &[peers::BARE],
        target_p50_ms: None,
    },
    WarrenRow {
        name: "docker cold cycle",
        backend: Which::Docker,
        cold: true,
        user: "bench_docker_cold",
        uid: 2_999_005,
        peers: &[peers::DOCKER],
        target_p50_ms: None,
    },
    WarrenRow {
        name: "docker exec",
        backend: Which::Docker,
        cold: false,
        user: "bench_docker_exec",
        uid: 2_999_006,
        peers: &[peers::DOCKER_EXEC],
        target_p50_ms: None,
    },
];

/// Whether `--rows` selects row `name`: a word matches the start of a word of the name
/// (`ns` selects "ns exec" but not "unshare"); words with spaces match as phrases.
fn selected(filter: &[String], name: &str) -> bool {
    let name = name.to_lowercase();
    filter.is_empty()
        || filter.iter().any(|f| {
            if f.contains(' ') {
                name.contains(f.as_str())
            } else {
                name.split([' ', '/']).any(|w| w.starts_with(f.as_str()))
            }
        })
}

/// The state directory of the run: made 0711 with `workspaces/` 0711, as the backends expect.
fn prepare_state_dir(dir: &Path) -> Result<(), String> {
    for d in [dir.to_path_buf(), dir.join("workspaces")] {
        std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("chmod 0711 {}: {e}", d.display()))?;
    }
    Ok(())
}

/// Mount points at or below `dir` in this mount namespace (a backend that leaked a mount).
fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect()
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == warren_backend_ns::HELPER_ARG) {
        warren_backend_ns::helper_main(argv[2..].to_vec());
    }
    let args = match parse_args(argv.into_iter().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("warren-bench: {e}");
            std::process::exit(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "warren-bench: run as root (sudo bench/run): the backends switch uids and create namespaces, and runc needs root"
        );
        std::process::exit(1);
    }
    match run(&args) {
        Ok(clean) => std::process::exit(if args.strict && !clean { 1 } else { 0 }),
        Err(e) => {
            eprintln!("warren-bench: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the selected rows, prints and writes the report; `Ok(false)` if a row failed or missed.
fn run(args: &Args) -> Result<bool, String> {
    let started = std::time::SystemTime::now();
    let (state_dir, temp) = match &args.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("warren-bench-state-")
                .tempdir()
                .map_err(|e| format!("creating a temporary state directory: {e}"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    prepare_state_dir(&state_dir)?;
    let helper = HelperCmd::locate();
    let helper_desc = match &helper {
        Ok(h) => format!("{} {}", h.program.display(), peers::show(&h.args)).trim().to_owned(),
        Err(e) => format!("not found: {e}"),
    };
    eprintln!("warren-bench: state dir {}, ns helper {helper_desc}", state_dir.display());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let mut rows = Vec::new();

    // Warren's rows.
    let mut ns: Option<Result<Arc<dyn Backend>, String>> = None;
    let mut dir: Option<Result<Arc<dyn Backend>, String>> = None;
    let mut docker: Option<Result<Arc<dyn Backend>, String>> = None;
    let mut docker_files = PeerFiles::new()?;
    for w in WARREN_ROWS.iter().filter(|w| selected(&args.rows, w.name)) {
        let backend = match w.backend {
            Which::Ns => ns
                .get_or_insert_with(|| {
                    NsBackend::probe().map_err(|why| format!("the ns backend cannot run here: {why}"))?;
                    let helper = helper.as_ref().map_err(|e| format!("finding the ns helper: {e}"))?.clone();
                    let b =
                        NsBackend::new(&state_dir, Some(helper)).map_err(|e| format!("opening the ns backend: {e}"))?;
                    Ok(Arc::new(b) as Arc<dyn Backend>)
                })
                .clone(),
            Which::Dir => dir
                .get_or_insert_with(|| {
                    DirBackend::probe().map_err(|why| format!("the dir backend cannot run here: {why}"))?;
                    let b = DirBackend::new(&state_dir).map_err(|e| format!("opening the dir backend: {e}"))?;
                    Ok(Arc::new(b) as Arc<dyn Backend>)
                })
                .clone(),
            Which::Docker => docker
                .get_or_insert_with(|| {
                    DockerBackend::probe().map_err(|why| {
                        format!("no docker daemon: {why} (scripts/install-deps --docker installs and starts it)")
                    })?;
                    let image = format!("warren-bench-backend:{}", std::process::id());
                    let rootfs = peers::docker_backend_rootfs(&mut docker_files, &image)
                        .map_err(|e| format!("preparing the docker backend's image: {e:?}"))?;
                    let opts = DockerOptions { image: image.clone(), ..DockerOptions::default() };
                    let b = DockerBackend::with_options(&state_dir, opts)
                        .map_err(|e| format!("opening the docker backend: {e}"))?;
                    rt.block_on(warren_backend_docker::image::import_dir(b.docker(), &rootfs, &image))
                        .map_err(|e| format!("importing the docker backend's image: {e}"))?;
                    Ok(Arc::new(b) as Arc<dyn Backend>)
                })
                .clone(),
        };
        eprintln!("warren-bench: {} ({} iterations + {} warm-up)", w.name, args.iterations, args.warmup);
        let outcome = match backend {
            Err(e) => Err(Unavailable::Error(e)),
            Ok(b) => {
                let (user, uid, warmup, n, cold) = (w.user, w.uid, args.warmup, args.iterations, w.cold);
                // Spawned so that a panicking backend fails its row, not the run.
                let task = rt.spawn(async move {
                    if cold {
                        warren::cold_cycle(b, user, uid, warmup, n).await
                    } else {
                        warren::exec_loop(b, user, uid, warmup, n).await
                    }
                });
                match rt.block_on(task) {
                    Ok(r) => r.map_err(Unavailable::Error),
                    Err(e) => Err(Unavailable::Error(format!("the row panicked: {e}"))),
                }
            }
        };
        let command = if w.cold {
            "create + start + exec /bin/echo hi + destroy (fresh workspace each time)"
        } else {
            "exec /bin/echo hi in a running workspace"
        };
        rows.push(Row {
            name: w.name.to_owned(),
            kind: RowKind::Warren,
            command: command.to_owned(),
            version: None,
            outcome,
            peers: w.peers.to_vec(),
            target_p50_ms: w.target_p50_ms,
            target_speedup: None,
            sizes: None,
            target_p99_ms: None,
            note: None,
        });
    }

    // Snapshot rows (their peers come with them: same workspace, interleaved iterations).
    if selected(&args.rows, snapshot::CREATE) || selected(&args.rows, snapshot::RESTORE) {
        rows.extend(snapshot::rows(args.snapshot_dir.as_deref(), args.warmup.min(1), args.iterations.min(5)));
    }

    // Terminal rows (their ssh peers come with them: same run, same measuring code).
    if [terminal::ECHO, terminal::THROUGHPUT, terminal::SSH_ECHO, terminal::SSH_THROUGHPUT]
        .iter()
        .any(|n| selected(&args.rows, n))
    {
        rows.extend(terminal::rows(&rt, &state_dir, args.warmup, args.iterations));
    }

    // The peers.
    let mut files = PeerFiles::new()?;
    let wanted = |name: &str| selected(&args.rows, name);
    let mut list = Vec::new();
    for (name, make) in [
        (peers::BARE, peers::bare as fn() -> peers::Peer),
        (peers::UNSHARE, peers::unshare),
        (peers::BWRAP, peers::bwrap),
    ] {
        if wanted(name) {
            list.push(make());
        }
    }
    if wanted(peers::RUNC) {
        list.push(peers::runc(&files));
    }
    if wanted(peers::DOCKER) {
        list.push(peers::docker(&mut files));
    }
    if wanted(peers::DOCKER_EXEC) {
        list.push(peers::docker_exec(&mut files));
    }
    for p in list {
        eprintln!("warren-bench: peer {} ({} iterations + {} warm-up)", p.name, args.iterations, args.warmup);
        let outcome = p.argv.and_then(|argv| {
            let mut samples = warren::Samples::default();
            for i in 0..args.warmup + args.iterations {
                let took =
                    peers::run_once(&argv(i)).map_err(|e| Unavailable::Error(format!("iteration {}: {e}", i + 1)))?;
                if i >= args.warmup {
                    samples.total.push(took);
                }
            }
            Ok(samples)
        });
        rows.push(Row {
            name: p.name.to_owned(),
            kind: RowKind::Peer,
            command: p.command,
            version: p.version,
            outcome,
            peers: vec![],
            target_p50_ms: None,
            target_speedup: None,
            sizes: None,
            target_p99_ms: None,
            note: None,
        });
    }
    drop(files);
    drop(rt);

    let host = report::Host::read(helper_desc);
    let rep = report::build(&rows, host, args.iterations, args.warmup, started);
    let md = report::markdown(&rep);
    println!("{md}");
    report::write(&rep, &md, &args.json)?;
    eprintln!("warren-bench: wrote {}", args.json.display());

    if let Some(t) = temp {
        let leaked = mounts_below(t.path());
        if leaked.is_empty() {
            let _ = t.close();
        } else {
            let kept = t.keep();
            eprintln!(
                "warren-bench: NOT removing {}: mounts are left below it ({}); unmount them and remove it by hand",
                kept.display(),
                leaked.join(", ")
            );
        }
    }
    Ok(rep.clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(OsString::from).collect())
    }

    #[test]
    fn parses_flags() {
        let a = args(&["--iterations", "10", "--warmup=0", "--rows", "ns, BWRAP", "--strict"]).expect("valid");
        assert_eq!((a.iterations, a.warmup, a.strict), (10, 0, true));
        assert_eq!(a.rows, vec!["ns", "bwrap"]);
        assert!(a.json.ends_with("bench/results/latest.json"));
        assert!(args(&["--iterations", "x"]).expect_err("not a number").contains("not a whole number"));
        assert!(args(&["--iterations", "0"]).is_err());
        assert!(args(&["--bogus"]).expect_err("unknown").contains("unknown argument"));
        assert!(args(&["--json"]).expect_err("missing value").contains("needs a value"));
    }

    #[test]
    fn row_filter_matches_substrings() {
        assert!(selected(&[], "ns exec"));
        assert!(selected(&["ns".into()], "ns cold cycle"));
        assert!(!selected(&["dir".into()], "ns exec"));
        assert!(selected(&["run".into()], "runc run"));
        assert!(!selected(&["ns".into()], "unshare"));
        assert!(selected(&["echo".into()], "bare /bin/echo"));
        assert!(selected(&["ns exec".into()], "ns exec"));
        assert!(!selected(&["ns exec".into()], "ns cold cycle"));
    }
}
