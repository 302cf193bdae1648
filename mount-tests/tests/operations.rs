//! How operators run fetchfs: the Debian package (installed into a scratch root, never into this
//! machine's /usr), mounting through mount(8) and /etc/fstab lines, the metrics endpoint, the
//! systemd unit, container and Kubernetes examples, and the README's demo script.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mount_tests::data;
use mount_tests::mount::{Mount, fetchfs_binary, fresh_dir, is_mounted};
use mount_tests::profile::Profile;
use mount_tests::server::{ServerConfig, StoredObject, TestServer};
use yaml_rust2::{Yaml, YamlLoader};

const BUCKET: &str = "ops";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package built from the binary under test, and the scratch root it was unpacked into.
fn installed() -> &'static (PathBuf, PathBuf) {
    static INSTALLED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let out_dir = fresh_dir("deb");
        let built = Command::new("bash")
            .arg(repo().join("packaging/deb/build-deb.sh"))
            .arg(fetchfs_binary())
            .arg(&out_dir)
            .output()
            .expect("run build-deb.sh");
        let deb = PathBuf::from(ok(built, "build-deb.sh").trim());
        let root = fresh_dir("scratch-root");
        ok(Command::new("dpkg").arg("-x").arg(&deb).arg(&root).output().expect("dpkg -x"), "dpkg -x");
        (deb, root)
    })
}

fn server_with_files() -> TestServer {
    let server = TestServer::start(ServerConfig::default()).expect("start server");
    server.storage().create_bucket(BUCKET).unwrap();
    for i in 0..3u64 {
        server.storage().put(BUCKET, &format!("f{i}"), StoredObject::new(data::content(i, 1000), None)).unwrap();
    }
    server
}

#[test]
fn the_deb_builds_and_installs_into_a_scratch_root() {
    let (deb, root) = installed();
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(deb).output().expect("dpkg-deb -I"), "dpkg-deb -I");
    assert!(info.contains("Package: fetchfs") && info.contains("Depends: fuse3"), "{info}");
    for file in [
        "usr/bin/fetchfs",
        "usr/share/man/man8/fetchfs.8.gz",
        "usr/share/man/man8/fetchfs-mount.8.gz",
        "lib/systemd/system/fetchfs@.service",
        "etc/fetchfs/example.env",
    ] {
        let meta = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 0, "{file} is empty");
    }
    let helper = std::fs::read_link(root.join("usr/sbin/mount.fuse.fetchfs")).expect("the helper is a link");
    assert_eq!(helper, Path::new("../bin/fetchfs"));
    let version = ok(Command::new(root.join("usr/bin/fetchfs")).arg("--version").output().expect("run"), "--version");
    assert!(version.starts_with("fetchfs "), "{version}");
    let manual = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | grep -c metadata", root.join("usr/share/man/man8/fetchfs-mount.8.gz").display()))
        .output()
        .expect("read the manual page");
    assert!(ok(manual, "manual page").trim().parse::<u32>().unwrap_or(0) > 0, "the manual names the options");

    // The maintainer scripts succeed on a machine without systemd (this one has none running).
    let control = fresh_dir("deb-control");
    ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control).output().expect("dpkg-deb -e"), "dpkg-deb -e");
    for (script, arg) in [("postinst", "configure"), ("postrm", "remove")] {
        let run = Command::new("sh").arg(control.join(script)).arg(arg).output().expect("run script");
        ok(run, script);
    }
    let _ = std::fs::remove_dir_all(control);
}

/// Runs `script` with sh in a private mount namespace where the package's /usr is laid over the
/// machine's (an overlay that only this namespace sees), as if the package were installed.
fn in_namespace_with_package(script: &str, server: &TestServer) -> Output {
    let (_, root) = installed();
    let credentials = server.credentials().cloned().unwrap_or_default();
    let setup = format!("set -e\nmount -t overlay overlay -o lowerdir={}/usr:/usr /usr\n", root.display());
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(setup + script)
        .env("AWS_ACCESS_KEY_ID", &credentials.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &credentials.secret_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare")
}

#[test]
fn mount_t_fuse_fetchfs_and_an_fstab_line_mount_and_umount_unmounts() {
    let server = server_with_files();
    let dir = fresh_dir("helper-mnt");
    let fstab = fresh_dir("fstab").join("fstab");
    let endpoint = server.endpoint_url();
    std::fs::write(
        &fstab,
        format!(
            "s3://{BUCKET}/  {}  fuse.fetchfs  _netdev,nofail,endpoint_url={endpoint},force_path_style,metadata_ttl=60  0 0\n",
            dir.display()
        ),
    )
    .unwrap();
    let d = dir.display();
    let script = format!(
        "mount -t fuse.fetchfs {BUCKET} {d} -o ro,_netdev,nofail,allow_other,endpoint_url={endpoint},force_path_style,file_mode=0600\n\
         stat -c %a {d}/f1\n\
         if touch {d}/new 2>&1 | grep -q 'Read-only file system'; then echo read-only; else echo writable; fi\n\
         cat {d}/f1 > {d}.bytes\n\
         umount {d}\n\
         if grep -q ' {d} ' /proc/self/mountinfo; then echo still mounted; exit 1; fi\n\
         mount -a -T {fstab}\n\
         mount -a -T {fstab}\n\
         echo mounted $(grep -c ' {d} ' /proc/self/mountinfo) time\n\
         awk -v d={d} '$2 == d {{ print $1, $3 }}' /proc/self/mounts\n\
         ls {d}\n\
         umount {d}\n\
         echo done\n",
        fstab = fstab.display()
    );
    let out = ok(in_namespace_with_package(&script, &server), "mount through the helper");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"600"), "file_mode from -o reached fetchfs: {out}");
    assert_eq!(lines.get(1), Some(&"read-only"), "-o ro became --read-only (EROFS): {out}");
    assert_eq!(lines.get(2), Some(&"mounted 1 time"), "mount -a twice: both exit 0 (set -e), one mount: {out}");
    assert_eq!(lines.get(3), Some(&"s3://ops/ fuse.fetchfs"), "source and type as the fstab line has them: {out}");
    assert_eq!(&lines[4..7], ["f0", "f1", "f2"], "the fstab line mounted the bucket: {out}");
    assert_eq!(lines.last(), Some(&"done"));
    let bytes = std::fs::read(format!("{d}.bytes")).expect("bytes read through the helper's mount");
    assert_eq!(bytes, data::content(1, 1000).to_vec());
    assert!(!is_mounted(&dir));
    let _ = std::fs::remove_file(format!("{d}.bytes"));
    let _ = std::fs::remove_dir(&dir);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the scrape");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn the_metrics_endpoint_shows_bytes_and_requests_moving_during_a_read() {
    let server = TestServer::start(ServerConfig::default()).expect("start server");
    server.storage().create_bucket(BUCKET).unwrap();
    let size = 256 * 1024 * 1024;
    server.storage().put(BUCKET, "big", StoredObject::new(data::content(3, size), None)).unwrap();
    // Slow enough that the read is still going when it is scraped.
    Profile::S3Like.apply(server.knobs());
    server.knobs().set_bandwidth(Some(20_000_000));
    let port = free_port();
    let mount = Mount::of(&server, BUCKET, &["--metrics-addr", &format!("127.0.0.1:{port}"), "--max-connections", "4"]);
    let before = scrape(port);
    let reader = Command::new("dd")
        .arg(format!("if={}", mount.path("big").display()))
        .args(["of=/dev/null", "bs=1M", "status=none"])
        .spawn()
        .expect("start dd");
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(700));
        samples.push(scrape(port));
    }
    let mut reader = reader;
    let still_reading = reader.try_wait().map(|status| status.is_none()).unwrap_or(false);
    let _ = reader.kill();
    let _ = reader.wait();
    server.knobs().clear();
    let fetched: Vec<f64> = samples.iter().map(|s| metric(s, "fetchfs_fetched_bytes_total")).collect();
    assert_eq!(metric(&before, "fetchfs_fetched_bytes_total"), 0.0);
    assert!(fetched.windows(2).all(|w| w[1] > w[0]), "bytes fetched keep rising during the read: {fetched:?}");
    let last = samples.last().expect("scraped");
    assert!(metric(last, "fetchfs_requests_total{op=\"get\",status=\"ok\"}") > 1.0, "{last}");
    assert!(!still_reading || metric(last, "fetchfs_open_handles") >= 1.0, "dd holds the file open: {last}");
    assert!(metric(last, "fetchfs_readahead_window_bytes_count") >= 1.0, "{last}");
    assert!(metric(last, "fetchfs_cache_bytes") > 0.0, "{last}");
}

/// Every `--flag` that `fetchfs mount` accepts, from its help.
fn mount_flags() -> Vec<String> {
    let help = ok(Command::new(fetchfs_binary()).args(["mount", "--help"]).output().expect("help"), "help");
    help.split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').to_owned())
        .collect()
}

fn assert_flags_exist(words: &[&str], flags: &[String], context: &str) {
    for word in words.iter().filter(|w| w.starts_with("--")) {
        let flag = word.split('=').next().unwrap_or(word);
        assert!(flags.iter().any(|f| f == flag), "{context} names {flag}, which fetchfs mount does not accept");
    }
}

#[test]
fn the_unit_fstab_container_and_kubernetes_examples_name_real_flags_and_paths() {
    let flags = mount_flags();
    assert!(flags.iter().any(|f| f == "--metadata-ttl"), "{flags:?}");
    let (_, root) = installed();

    // systemd unit: the binary it starts is the packaged one; its flags exist.
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/fetchfs@.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(root.join(words[0].trim_start_matches('/')).is_file(), "{} is in the package", words[0]);
    assert_eq!(&words[1..3], ["mount", "--foreground"]);
    assert_flags_exist(&words, &flags, "fetchfs@.service");
    assert!(unit.contains("Restart=on-failure"));
    // Without a state directory (no HOME under systemd) the journal of uploads would be off.
    assert!(unit.lines().any(|l| l.starts_with("StateDirectory=fetchfs/")), "{unit}");
    assert!(unit.contains("EnvironmentFile=/etc/fetchfs/%i.env") && root.join("etc/fetchfs").is_dir());
    let env = std::fs::read_to_string(repo().join("packaging/systemd/example.env")).unwrap();
    let options = env.lines().find_map(|l| l.strip_prefix("FETCHFS_OPTIONS=")).expect("FETCHFS_OPTIONS");
    assert_flags_exist(&options.split_whitespace().collect::<Vec<_>>(), &flags, "example.env");

    // fstab example: fuse.fetchfs with _netdev and nofail; the mount helper turns every other
    // option into a real flag.
    let fstab = std::fs::read_to_string(repo().join("packaging/fstab.example")).unwrap();
    let lines: Vec<&str> = fstab.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "an fstab line");
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "fuse.fetchfs");
        let options: Vec<&str> = fields[3].split(',').collect();
        assert!(options.contains(&"_netdev") && options.contains(&"nofail"));
        let call = fetchfs::cli::helper_args(&[fields[0].into(), fields[1].into(), "-o".into(), fields[3].into()]);
        let Ok(fetchfs::cli::HelperCall::Mount(mapped)) = call else { panic!("{line}: {call:?}") };
        let words: Vec<&str> = mapped.iter().map(String::as_str).filter(|w| *w != "--").collect();
        assert!(words.contains(&"--read-only") || !options.contains(&"ro"), "ro becomes --read-only");
        assert_flags_exist(&words, &flags, "fstab.example");
    }

    // Containerfile: builds the fetchfs package and runs the binary it copies.
    let containerfile = std::fs::read_to_string(repo().join("packaging/container/Containerfile")).unwrap();
    let instructions: Vec<&str> = containerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    for word in &instructions {
        assert!(["FROM", "WORKDIR", "COPY", "RUN", "ENTRYPOINT", "CMD"].contains(word), "unknown instruction {word}");
    }
    assert!(containerfile.contains("cargo build --release -p fetchfs"));
    assert!(containerfile.contains("COPY --from=build /src/target/release/fetchfs /usr/bin/fetchfs"));
    assert!(containerfile.contains(r#"ENTRYPOINT ["/usr/bin/fetchfs"]"#));

    // DaemonSet: valid YAML; the container runs `fetchfs mount` with real flags, privileged, with
    // the mount directory shared back to the host (Bidirectional) and /dev/fuse.
    let text = std::fs::read_to_string(repo().join("packaging/kubernetes/daemonset.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("the DaemonSet is valid YAML");
    let ds = &docs[0];
    assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["command"][0].as_str(), Some("/usr/bin/fetchfs"));
    let args: Vec<&str> = container["args"].as_vec().expect("args").iter().filter_map(Yaml::as_str).collect();
    assert_eq!(args[0], "mount");
    assert_flags_exist(&args, &flags, "daemonset.yaml");
    let mountpoint = args.last().expect("a mount point");
    assert_eq!(container["securityContext"]["privileged"].as_bool(), Some(true));
    let mounts = container["volumeMounts"].as_vec().expect("volumeMounts");
    let shared =
        mounts.iter().find(|m| m["mountPropagation"].as_str() == Some("Bidirectional")).expect("Bidirectional");
    assert!(
        mountpoint.starts_with(shared["mountPath"].as_str().unwrap_or("?")),
        "the mount point is in the shared volume"
    );
    assert!(mounts.iter().any(|m| m["mountPath"].as_str() == Some("/dev/fuse")));
    // The disk cache lives on the node, in a volume of its own.
    let cache_dir = args.iter().position(|a| *a == "--disk-cache").map(|i| args[i + 1]).expect("--disk-cache");
    let cache_mount = mounts.iter().find(|m| m["mountPath"].as_str() == Some(cache_dir)).expect("the cache is mounted");
    let cache_volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str() == cache_mount["name"].as_str())
        .expect("the cache's volume");
    assert!(cache_volume["hostPath"]["path"].as_str().is_some(), "a hostPath: it survives the pod");
    let init = &pod["initContainers"][0]["command"];
    assert_eq!(init[2].as_str(), Some(*mountpoint), "the mount point is made before fetchfs starts");
}

#[test]
fn the_readme_demo_ends_with_the_sample_data_readable() {
    let bin = fetchfs_binary().parent().expect("target dir").to_path_buf();
    assert!(bin.join("test-s3-server").is_file(), "cargo builds the server with the tests");
    let dir = fresh_dir("demo");
    // Another server on MinIO's usual port (if nothing else holds it already): the demo finds its own.
    let _other_server = std::net::TcpListener::bind("127.0.0.1:9000");
    let out = demo(&bin, &dir, None);
    let stdout = ok(out, "demo.sh");
    assert!(stdout.contains("README.txt"), "the listing shows the sample: {stdout}");
    assert!(stdout.contains("shard-0000.bin"), "sha256sum read a shard: {stdout}");
    assert!(stdout.contains("demo finished"), "{stdout}");
    assert!(!is_mounted(&dir));
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_second_demo_run_leaves_the_first_running_and_its_stop_command_stops_it() {
    let bin = fetchfs_binary().parent().expect("target dir").to_path_buf();
    let dir = fresh_dir("demo-twice");
    let first = ok(demo_kept(&bin, &dir), "the first demo.sh");
    let stop = first.lines().rev().find(|l| l.trim_start().starts_with("umount ")).expect("a stop command").trim();
    assert!(is_mounted(&dir));
    assert!(first.contains("--allow-delete --allow-overwrite") && first.contains("memory"), "{first}");
    // fetchfs's own startup line, at the default log level: which tiers are on.
    let startup = first.lines().find(|l| l.starts_with("fetchfs: s3://sample/")).expect("the startup line");
    // The whole --cache-size, and its shares: 512 MiB by default, a quarter of it for writes.
    assert!(startup.contains("; memory cache 512 MiB (384 for reads, 128 for writes); no disk cache;"), "{startup}");
    assert!(startup.ends_with("; writes: new files, overwrite, delete"), "{startup}");
    let log = first.lines().find_map(|l| l.split("fetchfs's log").nth(1)).expect("the log is named");
    assert!(log.contains("-fetchfs.log"), "{log}");
    let second = ok(demo_kept(&bin, &dir), "the second demo.sh");
    assert!(second.contains("already running"), "{second}");
    assert!(is_mounted(&dir), "the second run left the first one's mount alone");
    assert!(std::fs::read_dir(&dir).expect("the first demo still serves").next().is_some(), "its files are listed");
    let out = Command::new("bash").args(["-c", stop]).output().expect("run the stop command");
    assert!(out.status.success(), "{stop}: {out:?}");
    assert!(!is_mounted(&dir));
    assert!(!dir.exists(), "the stop command removed the mount point");
}

/// The demo as a user runs it: left running at the end. What it prints (stdout and stderr, as a
/// terminal shows them) goes through a file, since the server and the daemon it leaves running
/// outlive it.
fn demo_kept(bin: &Path, dir: &Path) -> std::process::Output {
    let printed = dir.with_extension("printed");
    let status = Command::new("bash")
        .arg(repo().join("mount-tests/demo.sh"))
        .env("FETCHFS_DEMO_BIN", bin)
        .env("FETCHFS_DEMO_DIR", dir)
        .env_remove("FETCHFS_DEMO_PORT")
        .env_remove("DEMO_NONINTERACTIVE")
        .stdin(Stdio::null())
        .stdout(appending(&printed))
        .stderr(appending(&printed))
        .status()
        .expect("run demo.sh");
    let stdout = std::fs::read(&printed).expect("the demo's output");
    let _ = std::fs::remove_file(&printed);
    std::process::Output { status, stdout, stderr: Vec::new() }
}

fn appending(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("a file for the demo's output")
}

fn demo(bin: &Path, dir: &Path, port: Option<u16>) -> std::process::Output {
    let mut command = Command::new("bash");
    command
        .arg(repo().join("mount-tests/demo.sh"))
        .env("DEMO_NONINTERACTIVE", "1")
        .env("FETCHFS_DEMO_BIN", bin)
        .env("FETCHFS_DEMO_DIR", dir)
        .env_remove("FETCHFS_DEMO_PORT")
        .stdin(Stdio::null());
    if let Some(port) = port {
        command.env("FETCHFS_DEMO_PORT", port.to_string());
    }
    command.output().expect("run demo.sh")
}

#[test]
fn the_demo_says_so_when_its_server_cannot_take_the_port_asked_for() {
    let bin = fetchfs_binary().parent().expect("target dir").to_path_buf();
    let dir = fresh_dir("demo-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let port = taken.local_addr().expect("port").port();
    let out = demo(&bin, &dir, Some(port));
    assert!(!out.status.success(), "the demo fails: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("test S3 server did not start") && stderr.contains(&port.to_string()), "{stderr}");
    assert!(!is_mounted(&dir));
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_user_who_may_not_open_dev_fuse_is_told_which_file_and_what_to_do() {
    let as_nobody = |program: &Path, args: &[&std::ffi::OsStr]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program)
            .args(args)
            .output()
            .expect("run setpriv")
    };
    let open_to_all = as_nobody(Path::new("sh"), &["-c".as_ref(), "test -r /dev/fuse && test -w /dev/fuse".as_ref()]);
    if open_to_all.status.success() {
        eprintln!("/dev/fuse is open to every user on this machine: nothing to check");
        return;
    }
    let mountpoint = fresh_dir("nobody-mnt");
    ok(Command::new("chown").arg("65534").arg(&mountpoint).output().expect("chown"), "chown");
    let out = as_nobody(
        &fetchfs_binary(),
        &[
            "mount".as_ref(),
            "any-bucket".as_ref(),
            mountpoint.as_os_str(),
            "--endpoint-url".as_ref(),
            "http://127.0.0.1:9".as_ref(),
        ],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("/dev/fuse") && said.contains("Permission denied"), "{said}");
    let _ = std::fs::remove_dir(&mountpoint);
}

#[test]
fn a_mistake_s_usage_line_shows_only_what_was_typed() {
    // AWS_CA_BUNDLE in the environment is read by fetchfs, not shown as if passed on the line.
    let out = Command::new(fetchfs_binary())
        .args(["mount", "--no-such-flag", "bucket", "/mnt"])
        .env("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        .output()
        .expect("run fetchfs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--no-such-flag"), "{said}");
    assert!(!said.contains("--ca-bundle"), "{said}");
}

/// The README's text.
fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// The README's fenced blocks of `language`, in order.
fn readme_blocks(language: &str) -> Vec<String> {
    let (text, fence) = (readme(), format!("```{language}"));
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == fence {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.iter().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect::<Vec<_>>().join("\n"));
        }
    }
    blocks
}

/// The `sh` block that follows `heading` in the README.
fn readme_sh_after(heading: &str) -> String {
    let text = readme();
    let at = text.find(heading).unwrap_or_else(|| panic!("the README has {heading:?}"));
    let rest = &text[at..];
    let start = rest.find("```sh\n").expect("an sh block") + "```sh\n".len();
    rest[start..start + rest[start..].find("```").expect("the block ends")].to_owned()
}

#[test]
fn the_readme_install_step_puts_fetchfs_and_its_helper_on_path_and_real_use_works() {
    let server = server_with_files();
    let install = readme_sh_after("## Install");
    // apt-get is .ci/run's (fuse3 is there already); the rest runs as written, from the checkout.
    let install: Vec<&str> = install.lines().filter(|l| !l.trim_start().starts_with("apt-get")).collect();
    assert!(install.iter().any(|l| l.contains("target/release/fetchfs")), "{install:?}");
    let installed_before = Path::new("/usr/local/bin/fetchfs").exists();
    let dir = fresh_dir("install-mnt");
    let d = dir.display();
    let endpoint = server.endpoint_url();
    // Installed into overlays only this namespace sees: the machine's /usr is left as it was.
    let script = format!(
        "set -e\n\
         mount -t tmpfs tmpfs /mnt\n\
         for d in /usr/local/bin /usr/sbin; do\n\
           n=$(echo $d | tr / _); mkdir -p /mnt/$n.up /mnt/$n.work\n\
           mount -t overlay overlay -o lowerdir=$d,upperdir=/mnt/$n.up,workdir=/mnt/$n.work $d\n\
         done\n\
         cd {repo}\n\
         {install}\n\
         cd /\n\
         echo fetchfs at $(command -v fetchfs)\n\
         fetchfs mount s3://{BUCKET}/ {d} --endpoint-url {endpoint} --force-path-style\n\
         ls {d}\n\
         umount {d}\n\
         mount -t fuse.fetchfs {BUCKET} {d} -o endpoint_url={endpoint},force_path_style\n\
         cat {d}/f2 | wc -c\n\
         umount {d}\n",
        repo = repo().display(),
        install = install.join("\n"),
    );
    let credentials = server.credentials().cloned().unwrap_or_default();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("AWS_ACCESS_KEY_ID", &credentials.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &credentials.secret_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let out = ok(out, "the README's install step, then real use");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"fetchfs at /usr/local/bin/fetchfs"), "{out}");
    assert_eq!(&lines[1..4], ["f0", "f1", "f2"], "fetchfs mount, as 'Real use' writes it: {out}");
    assert_eq!(lines.get(4), Some(&"1000"), "mount -t fuse.fetchfs through the installed helper: {out}");
    assert_eq!(Path::new("/usr/local/bin/fetchfs").exists(), installed_before, "the machine's own /usr is untouched");
    assert!(!is_mounted(&dir));
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn the_readme_iam_policies_are_valid_and_grant_what_each_mode_asks() {
    let policies: Vec<serde_json::Value> = readme_blocks("json")
        .iter()
        .map(|block| serde_json::from_str(block).unwrap_or_else(|e| panic!("{e}: {block}")))
        .collect();
    assert_eq!(policies.len(), 2, "a reading policy and a writing one");
    let actions = |policy: &serde_json::Value| -> Vec<String> {
        assert_eq!(policy["Version"], "2012-10-17");
        let statements = policy["Statement"].as_array().expect("Statement");
        statements
            .iter()
            .inspect(|s| assert_eq!(s["Effect"], "Allow"))
            .flat_map(|s| s["Action"].as_array().expect("Action").iter().filter_map(|a| a.as_str().map(String::from)))
            .collect()
    };
    // What fetchfs's store sends, by the permission S3 checks for it.
    let known = ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"];
    let (reading, writing) = (actions(&policies[0]), actions(&policies[1]));
    for action in reading.iter().chain(&writing) {
        assert!(known.contains(&action.as_str()), "{action} is not a permission fetchfs needs");
    }
    assert_eq!(reading, ["s3:ListBucket", "s3:GetObject"]);
    for needed in known {
        assert!(writing.iter().any(|a| a == needed), "the writing policy grants {needed}");
    }
}

#[test]
fn the_readme_python_examples_are_valid_python_using_the_mount_as_the_readme_says() {
    let blocks = readme_blocks("python");
    assert!(blocks.len() >= 2, "the plain dataset and the order sampler");
    for block in &blocks {
        let mut parse = Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        parse.stdin.take().expect("stdin").write_all(block.as_bytes()).expect("write the example");
        let out = parse.wait_with_output().expect("python3 ran");
        assert!(out.status.success(), "{}\n{block}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(blocks.iter().any(|b| b.contains("DataLoader(") && b.contains("shuffle=True")), "a plain loader");
    assert!(blocks.iter().any(|b| b.contains("/.fetchfs/prefetch")), "the sampler writes the control file");
    assert!(readme().contains("sampler=MountOrderSampler(data.paths)"), "the loader with the sampler");
}

#[test]
fn the_training_pod_reads_the_daemonsets_mount_without_privilege() {
    let load = |name: &str| {
        let text = std::fs::read_to_string(repo().join("packaging/kubernetes").join(name)).unwrap();
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")).remove(0)
    };
    let (daemonset, pod) = (load("daemonset.yaml"), load("training-pod.yaml"));
    let ds_pod = &daemonset["spec"]["template"]["spec"];
    let args: Vec<&str> =
        ds_pod["containers"][0]["args"].as_vec().expect("args").iter().filter_map(Yaml::as_str).collect();
    let mountpoint = Path::new(args.last().expect("the DaemonSet's mount point"));
    let shared_volume = ds_pod["containers"][0]["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPropagation"].as_str() == Some("Bidirectional"))
        .and_then(|m| m["name"].as_str())
        .expect("the shared volume");
    let host_dir = ds_pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some(shared_volume))
        .and_then(|v| v["hostPath"]["path"].as_str())
        .expect("its hostPath");

    assert_eq!(pod["kind"].as_str(), Some("Pod"));
    let container = &pod["spec"]["containers"][0];
    assert!(container["securityContext"]["privileged"].is_badvalue(), "no privilege");
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPropagation"].as_str(), Some("HostToContainer"));
    let volume = &pod["spec"]["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(volume["hostPath"]["path"].as_str(), Some(host_dir), "the node directory the DaemonSet mounts in");
    // The path the job is given is the DaemonSet's mount point, seen from inside the pod.
    let inside = Path::new(mount["mountPath"].as_str().expect("mountPath"))
        .join(mountpoint.strip_prefix(host_dir).expect("the mount point is under the shared directory"));
    let command: Vec<&str> = container["command"].as_vec().expect("command").iter().filter_map(Yaml::as_str).collect();
    assert!(command.iter().any(|w| Path::new(w).starts_with(&inside)), "{command:?} reads under {}", inside.display());
    assert!(readme().contains("packaging/kubernetes/training-pod.yaml"));
}
