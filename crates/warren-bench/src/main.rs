//! `warren-bench`: warren beside its peers, measured in the same run: backend lifecycle and exec,
//! snapshots, the browser terminal, API exec throughput (`load`) and density (`density`).
//!
//! Prints a markdown table and writes `bench/results/latest.json` (and `latest.md`); the `load`
//! and `density` subcommands run one part alone. See `bench/README.md` for what each row
//! measures. Needs root.

mod density;
mod load;
mod peers;
mod report;
mod snapshot;
mod stats;
mod terminal;
mod warren;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use peers::{PeerFiles, Unavailable};
use report::{Row, RowKind};
use warren_backend_dir::DirBackend;
use warren_backend_docker::{DockerBackend, DockerOptions};
use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::Backend;

const USAGE: &str = "\
usage: warren-bench [--quick] [--iterations N] [--warmup N] [--rows NAME,...] [--json PATH]
                    [--state-dir DIR] [--snapshot-dir DIR] [--warren PATH] [--load-workspaces N]
                    [--load-execs N] [--concurrency N] [--density N] [--strict]
       warren-bench load [--workspaces N] [--execs N] [--concurrency N] [--warren PATH] [--json PATH]
       warren-bench density [--n N] [--cycles N] [--execs N] [--json PATH]

Times warren beside its peers in one run: the backends' lifecycle and exec (ns, dir, docker) beside
bare echo, unshare, bwrap, runc and docker; snapshot create/restore beside tar | zstd; the browser
terminal beside ssh to a loopback sshd; API exec throughput (a real `warren serve`) beside commands
over one OpenSSH connection; density (N idle ns workspaces). Prints a markdown table and writes
JSON (and the table) to bench/results/. Needs root.

  --quick          a smoke run: 20 iterations (2 warm-up), a small snapshot workspace, one 10 MiB
                   terminal flood, 20 workspaces / 1,000 API execs, density 50
  --iterations N   timed iterations per row (default 200; snapshot rows: at most 5, 1 warm-up)
  --warmup N       untimed iterations first (default 5)
  --rows LIST      only rows with a word starting with one of these comma-separated words
                   (e.g. ns,bwrap,api,density; 'ns exec' as a phrase); a warren row brings its peers
  --json PATH      where to write the JSON (default bench/results/latest.json; the .md beside it)
  --state-dir DIR  warren state directory for the run (default: a fresh temporary one, removed after)
  --snapshot-dir DIR  where the snapshot rows generate, archive and extract (default: /dev/shm when
                   it is a tmpfs, else the temporary directory); the table names its file system
  --warren PATH    the warren binary for the API row (default: beside this binary)
  --load-workspaces N, --load-execs N, --concurrency N
                   the API row's load (default 200 workspaces, 10,000 execs, 32 at once)
  --density N      idle workspaces of the density row (default 1,000)
  --strict         exit 1 if a row failed or missed its target

load: the API load test alone (default 200 workspaces, 10,000 execs, concurrency 32; JSON to
      bench/results/load.json); exit 1 on any error.
density: the density measurement alone (default --n 1000, 20 cold cycles, 100 execs; JSON to
      bench/results/density.json); exit 1 if it broke or left anything behind.
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
    quick: bool,
    warren: Option<PathBuf>,
    load_workspaces: usize,
    load_execs: usize,
    concurrency: usize,
    density: usize,
}

/// `bench/results/NAME` in the checkout this binary was built from.
fn results_file(name: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().and_then(Path::parent).unwrap_or(crate_dir);
    root.join("bench/results").join(name)
}

/// Splits `--flag=value` and `--flag value`; `next` yields the following arguments.
struct Flags {
    it: std::vec::IntoIter<OsString>,
}

impl Flags {
    fn new(args: Vec<OsString>) -> Self {
        Self { it: args.into_iter() }
    }

    /// The next flag and its inline value, if any.
    fn next_flag(&mut self) -> Option<Result<(String, Option<String>), String>> {
        let arg = self.it.next()?;
        Some(arg.into_string().map_err(|a| format!("argument {a:?} is not UTF-8")).map(
            |arg| match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg, None),
            },
        ))
    }

    fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String, String> {
        match inline {
            Some(v) => Ok(v),
            None => self.it.next().and_then(|v| v.into_string().ok()).ok_or(format!("{flag} needs a value")),
        }
    }

    fn number(&mut self, flag: &str, inline: Option<String>) -> Result<usize, String> {
        let v = self.value(flag, inline)?;
        v.replace('_', "").parse::<usize>().map_err(|_| format!("{flag}: {v:?} is not a whole number"))
    }
}

fn help() -> ! {
    print!("{USAGE}");
    std::process::exit(0);
}

fn parse_args(args: Vec<OsString>) -> Result<Args, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut a = Args {
        iterations: if quick { 20 } else { 200 },
        warmup: if quick { 2 } else { 5 },
        rows: vec![],
        json: results_file("latest.json"),
        state_dir: None,
        snapshot_dir: None,
        strict: false,
        quick,
        warren: None,
        load_workspaces: if quick { 20 } else { 200 },
        load_execs: if quick { 1000 } else { 10_000 },
        concurrency: 32,
        density: if quick { 50 } else { 1000 },
    };
    let mut f = Flags::new(args);
    while let Some(next) = f.next_flag() {
        let (flag, inline) = next?;
        match flag.as_str() {
            "--iterations" | "-n" => a.iterations = f.number(&flag, inline)?,
            "--warmup" => a.warmup = f.number(&flag, inline)?,
            "--rows" => {
                a.rows = f
                    .value(&flag, inline)?
                    .split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--json" => a.json = PathBuf::from(f.value(&flag, inline)?),
            "--state-dir" => a.state_dir = Some(PathBuf::from(f.value(&flag, inline)?)),
            "--snapshot-dir" => a.snapshot_dir = Some(PathBuf::from(f.value(&flag, inline)?)),
            "--warren" => a.warren = Some(PathBuf::from(f.value(&flag, inline)?)),
            "--load-workspaces" => a.load_workspaces = f.number(&flag, inline)?,
            "--load-execs" => a.load_execs = f.number(&flag, inline)?,
            "--concurrency" => a.concurrency = f.number(&flag, inline)?,
            "--density" => a.density = f.number(&flag, inline)?,
            "--strict" => a.strict = true,
            "--quick" => {}
            "-h" | "--help" => help(),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if a.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    if a.load_workspaces == 0 || a.concurrency == 0 || a.density == 0 {
        return Err("--load-workspaces, --concurrency and --density must be at least 1".into());
    }
    Ok(a)
}

/// `warren-bench load` arguments.
#[derive(Debug)]
struct LoadCmd {
    args: load::LoadArgs,
    json: PathBuf,
}

fn parse_load(args: Vec<OsString>) -> Result<LoadCmd, String> {
    let mut c = LoadCmd {
        args: load::LoadArgs { workspaces: 200, execs: 10_000, concurrency: 32, warren: None },
        json: results_file("load.json"),
    };
    let mut f = Flags::new(args);
    while let Some(next) = f.next_flag() {
        let (flag, inline) = next?;
        match flag.as_str() {
            "--workspaces" => c.args.workspaces = f.number(&flag, inline)?,
            "--execs" => c.args.execs = f.number(&flag, inline)?,
            "--concurrency" => c.args.concurrency = f.number(&flag, inline)?,
            "--warren" => c.args.warren = Some(PathBuf::from(f.value(&flag, inline)?)),
            "--json" => c.json = PathBuf::from(f.value(&flag, inline)?),
            "-h" | "--help" => help(),
            other => return Err(format!("load: unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if c.args.workspaces == 0 || c.args.concurrency == 0 {
        return Err("load: --workspaces and --concurrency must be at least 1".into());
    }
    Ok(c)
}

/// `warren-bench density` arguments.
#[derive(Debug)]
struct DensityCmd {
    args: density::DensityArgs,
    json: PathBuf,
}

fn parse_density(args: Vec<OsString>) -> Result<DensityCmd, String> {
    let mut c = DensityCmd {
        args: density::DensityArgs { n: 1000, cycles: 20, execs: 100, uid_base: density::UID_BASE },
        json: results_file("density.json"),
    };
    let mut f = Flags::new(args);
    while let Some(next) = f.next_flag() {
        let (flag, inline) = next?;
        match flag.as_str() {
            "--n" | "-n" => c.args.n = f.number(&flag, inline)?,
            "--cycles" => c.args.cycles = f.number(&flag, inline)?,
            "--execs" => c.args.execs = f.number(&flag, inline)?,
            "--json" => c.json = PathBuf::from(f.value(&flag, inline)?),
            "-h" | "--help" => help(),
            other => return Err(format!("density: unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if c.args.n == 0 || c.args.n > 100_000 {
        return Err("density: --n must be between 1 and 100000".into());
    }
    Ok(c)
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

// The load test's uids (1,000 for up to 500 workspaces) stay below density's.
const _: () = assert!(load::UID_BASE + 1000 <= density::UID_BASE);

/// The API exec row and its peer.
const API_EXEC: &str = "api exec";
const SSH_EXEC: &str = "ssh exec";

/// The peers of every warren row, for [`wanted_peer`].
fn peers_of_rows() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut v: Vec<(&'static str, Vec<&'static str>)> =
        WARREN_ROWS.iter().map(|w| (w.name, w.peers.to_vec())).collect();
    v.push((API_EXEC, vec![SSH_EXEC]));
    v
}

/// Whether peer `name` runs: selected itself, or a peer of a selected warren row.
fn wanted_peer(filter: &[String], name: &str) -> bool {
    selected(filter, name) || peers_of_rows().iter().any(|(row, peers)| selected(filter, row) && peers.contains(&name))
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
    let rest: Vec<OsString> = argv.iter().skip(1).cloned().collect();
    enum Cmd {
        Bench(Args),
        Load(LoadCmd),
        Density(DensityCmd),
    }
    let cmd = match rest.first().and_then(|a| a.to_str()) {
        Some("load") => parse_load(rest[1..].to_vec()).map(Cmd::Load),
        Some("density") => parse_density(rest[1..].to_vec()).map(Cmd::Density),
        _ => parse_args(rest).map(Cmd::Bench),
    };
    let cmd = match cmd {
        Ok(c) => c,
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
    let code = match cmd {
        Cmd::Bench(args) => match run(&args) {
            Ok(clean) => i32::from(args.strict && !clean),
            Err(e) => {
                eprintln!("warren-bench: {e}");
                1
            }
        },
        Cmd::Load(c) => run_load_cmd(&c),
        Cmd::Density(c) => run_density_cmd(&c),
    };
    std::process::exit(code);
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))
}

/// Writes `text` to `json`'s path with `.md`, and the JSON value to `json`.
fn write_results<T: serde::Serialize>(value: &T, md: &str, json: &Path) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("encoding the report: {e}"))?;
    report::write_atomic(json, format!("{text}\n").as_bytes())?;
    report::write_atomic(&json.with_extension("md"), md.as_bytes())?;
    eprintln!("warren-bench: wrote {} and {}", json.display(), json.with_extension("md").display());
    Ok(())
}

/// `warren-bench load`: 0 when every request succeeded, 1 otherwise.
fn run_load_cmd(c: &LoadCmd) -> i32 {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            load::stop_on_signals(stop.clone());
            load::run(&c.args, stop).await
        })
    });
    match result {
        Ok(rep) => {
            let md = rep.markdown();
            println!("{md}");
            if let Err(e) = write_results(&rep, &md, &c.json) {
                eprintln!("warren-bench: {e}");
            }
            i32::from(!rep.passed())
        }
        Err(e) => {
            eprintln!("warren-bench load: {e}");
            1
        }
    }
}

/// A fresh state directory (0711) for a run, removed by the caller.
fn temp_state(prefix: &str) -> Result<tempfile::TempDir, String> {
    let t = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("creating a temporary state directory: {e}"))?;
    prepare_state_dir(t.path())?;
    Ok(t)
}

/// The density measurement in a fresh state directory, removed after.
fn density_run(rt: &tokio::runtime::Runtime, args: &density::DensityArgs) -> Result<density::DensityReport, String> {
    let state = temp_state("wbd-")?;
    let r = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        load::stop_on_signals(stop.clone());
        density::run(args, state.path(), stop).await
    });
    load::remove_scratch(state);
    r
}

/// `warren-bench density`: 0 when it ran to the end without errors (whatever the memory).
fn run_density_cmd(c: &DensityCmd) -> i32 {
    match runtime().and_then(|rt| density_run(&rt, &c.args)) {
        Ok(rep) => {
            let md = rep.markdown();
            println!("{md}");
            if let Err(e) = write_results(&rep, &md, &c.json) {
                eprintln!("warren-bench: {e}");
            }
            let broke = rep.broke_at.is_some()
                || !rep.errors.is_empty()
                || !rep.teardown_errors.is_empty()
                || !rep.leftover_cgroups.is_empty()
                || rep.interrupted;
            i32::from(broke)
        }
        Err(e) => {
            eprintln!("warren-bench density: {e}");
            1
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

    let rt = runtime()?;
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
        let (warmup, n, files) =
            if args.quick { (0, 1, 3_000) } else { (args.warmup.min(1), args.iterations.min(5), 30_000) };
        rows.extend(snapshot::rows(args.snapshot_dir.as_deref(), warmup, n, files));
    }

    // Terminal rows (their ssh peers come with them: same run, same measuring code).
    if [terminal::ECHO, terminal::THROUGHPUT, terminal::SSH_ECHO, terminal::SSH_THROUGHPUT]
        .iter()
        .any(|n| selected(&args.rows, n))
    {
        let flood = if args.quick { terminal::Flood::QUICK } else { terminal::Flood::FULL };
        rows.extend(terminal::rows(&rt, &state_dir, args.warmup, args.iterations, flood));
    }

    // API exec throughput through a real `warren serve`, and its peer over OpenSSH.
    let mut load_report = None;
    let mut load_error = None;
    if selected(&args.rows, API_EXEC) {
        let la = load::LoadArgs {
            workspaces: args.load_workspaces,
            execs: args.load_execs,
            concurrency: args.concurrency,
            warren: args.warren.clone(),
        };
        eprintln!(
            "warren-bench: {API_EXEC} ({} workspaces, {} execs, concurrency {})",
            la.workspaces, la.execs, la.concurrency
        );
        let stop = Arc::new(AtomicBool::new(false));
        let outcome = match rt.block_on(load::run(&la, stop)) {
            Ok(rep) => {
                let outcome = match rep.failure() {
                    None => Ok(warren::Samples { total: rep.exec_samples.clone(), ..Default::default() }),
                    Some(why) => Err(Unavailable::Error(why)),
                };
                load_report = Some(rep);
                outcome
            }
            Err(e) if e.contains("no warren binary") => {
                load_error = Some(e.clone());
                Err(Unavailable::Skipped(e))
            }
            Err(e) => {
                load_error = Some(e.clone());
                Err(Unavailable::Error(e))
            }
        };
        let note = load_report.as_ref().map(|r| {
            format!(
                "{:.0} execs/s at concurrency {} over {} workspaces ({} build of warren serve, {} backend)",
                r.exec.per_sec, r.concurrency, r.workspaces, r.build, r.backend
            )
        });
        rows.push(Row {
            name: API_EXEC.to_owned(),
            kind: RowKind::Warren,
            command: format!(
                "POST /v1/workspaces/{{user}}/exec (true or echo) to warren serve, {} at once, over {} running workspaces",
                args.concurrency, args.load_workspaces
            ),
            version: None,
            outcome,
            peers: vec![SSH_EXEC],
            target_p50_ms: None,
            target_speedup: None,
            sizes: None,
            target_p99_ms: None,
            note,
        });
    }
    if wanted_peer(&args.rows, SSH_EXEC) {
        let n = args.load_execs.min(if args.quick { 500 } else { 2_000 });
        eprintln!("warren-bench: peer {SSH_EXEC} ({n} commands, concurrency {})", args.concurrency);
        let res = terminal::ssh_exec(n, args.concurrency);
        let note = res.as_ref().ok().map(|(s, wall)| {
            format!(
                "{:.0} commands/s at concurrency {}",
                s.total.len() as f64 / wall.as_secs_f64().max(1e-9),
                args.concurrency
            )
        });
        rows.push(Row {
            name: SSH_EXEC.to_owned(),
            kind: RowKind::Peer,
            command: "ssh -S CTL root@127.0.0.1 CMD: a new session on an authenticated connection (a ControlMaster per worker) to a loopback sshd, same commands and concurrency".to_owned(),
            version: None,
            outcome: res.map(|(s, _)| s),
            peers: vec![],
            target_p50_ms: None,
            target_speedup: None,
            sizes: None,
            target_p99_ms: None,
            note,
        });
    }

    // The peers.
    let mut files = PeerFiles::new()?;
    let wanted = |name: &str| wanted_peer(&args.rows, name);
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

    // Density last: nothing else runs while it measures the host's memory.
    let (mut density_report, mut density_error) = (None, None);
    if selected(&args.rows, "density") {
        let cycles = if args.quick { 5 } else { 20 };
        let da = density::DensityArgs { n: args.density, cycles, execs: 100, uid_base: density::UID_BASE };
        eprintln!("warren-bench: density ({} idle ns workspaces)", da.n);
        match density_run(&rt, &da) {
            Ok(d) => density_report = Some(d),
            Err(e) => density_error = Some(e),
        }
    }
    drop(rt);

    let host = report::Host::read(helper_desc);
    let mut rep = report::build(&rows, host, args.iterations, args.warmup, started);
    if load_report.as_ref().is_some_and(|l| !l.passed()) || density_report.as_ref().is_some_and(|d| d.result != "PASS")
    {
        rep.clean = false;
    }
    rep.load = load_report;
    rep.load_error = load_error;
    rep.density = density_report;
    rep.density_error = density_error;
    let md = report::markdown(&rep);
    println!("{md}");
    write_results(&rep, &md, &args.json)?;

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
    fn quick_mode_and_subcommands() {
        let q = args(&["--quick", "--rows", "api"]).expect("valid");
        assert_eq!((q.iterations, q.warmup, q.load_workspaces, q.load_execs, q.density), (20, 2, 20, 1000, 50));
        let full = args(&["--load-execs", "10_000"]).expect("valid");
        assert_eq!((full.iterations, full.load_workspaces, full.load_execs, full.concurrency), (200, 200, 10_000, 32));
        assert!(args(&["--concurrency", "0"]).is_err());
        let strs = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let l = parse_load(strs(&["--workspaces", "3", "--execs=30", "--concurrency", "4", "--warren", "/x/warren"]))
            .expect("valid");
        assert_eq!((l.args.workspaces, l.args.execs, l.args.concurrency), (3, 30, 4));
        assert_eq!(l.args.warren.as_deref(), Some(Path::new("/x/warren")));
        assert!(l.json.ends_with("bench/results/load.json"));
        assert!(parse_load(strs(&["--workspaces", "0"])).is_err());
        assert!(parse_load(strs(&["--rows", "x"])).expect_err("unknown").contains("unknown argument"));
        let d = parse_density(strs(&["--n", "7", "--cycles", "1"])).expect("valid");
        assert_eq!((d.args.n, d.args.cycles, d.args.uid_base), (7, 1, density::UID_BASE));
        assert!(d.json.ends_with("bench/results/density.json"));
        assert!(parse_density(strs(&["--n", "0"])).is_err());
    }

    #[test]
    fn a_selected_row_brings_its_peers() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(wanted_peer(&f(&["ns"]), peers::RUNC));
        assert!(wanted_peer(&f(&["ns"]), peers::BWRAP));
        assert!(!wanted_peer(&f(&["ns"]), peers::DOCKER));
        assert!(wanted_peer(&f(&["api"]), SSH_EXEC));
        assert!(!wanted_peer(&f(&["api"]), peers::BARE));
        assert!(wanted_peer(&f(&["bwrap"]), peers::BWRAP));
        assert!(wanted_peer(&[], SSH_EXEC));
        assert!(WARREN_ROWS.iter().all(|w| w.uid < load::UID_BASE), "the rows' uids stay below the load test's");
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
