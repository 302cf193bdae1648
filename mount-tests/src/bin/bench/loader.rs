//! Data-loader workers as a training job runs them: python3 processes started before the epoch
//! (a DataLoader's persistent workers), so that what is timed is the epoch and not eight
//! interpreters starting on two cores (0.7 s on these machines, more than the epoch itself).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Said first by every script run here: it is ready, and waits for the word to go.
const READY_THEN_WAIT: &str = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n";

/// A data-loader worker: reads every `workers`-th file of the sorted (or seeded-shuffled) listing,
/// starting at its own index, as a PyTorch DataLoader over a file list hands them out.
const WORKER: &str = r#"
import os, random
root, order, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names = sorted(os.listdir(root))
if order == "shuffled":
    random.Random(7).shuffle(names)
for name in names[k::n]:
    with open(os.path.join(root, name), "rb") as f:
        while f.read(1 << 20):
            pass
"#;

/// Writes the order the workers will read in (the same seeded shuffle) to the control file, as the
/// job's sampler does before it hands out the epoch's indices.
const ORDER: &str = r#"
import os, random
root, control = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(root))
random.Random(7).shuffle(names)
with open(control, "a") as f:
    f.write("".join(os.path.join(root, n) + "\n" for n in names))
"#;

/// Python processes started and waiting to go.
pub struct Started(Vec<Child>);

impl Started {
    fn python(script: &str, runs: impl IntoIterator<Item = Vec<String>>) -> Self {
        let children = runs
            .into_iter()
            .map(|args| {
                let mut child = Command::new("python3")
                    .args(["-c", &format!("{READY_THEN_WAIT}{script}")])
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn python3");
                let mut line = String::new();
                let stdout = child.stdout.as_mut().expect("a piped stdout");
                BufReader::new(stdout).read_line(&mut line).expect("python3 says it is ready");
                assert_eq!(line.trim(), "ready", "python3 did not start");
                child
            })
            .collect();
        Self(children)
    }

    /// Eight workers reading `dir` in `order` ("sorted" or "shuffled").
    pub fn workers(dir: &Path, order: &str) -> Self {
        let dir = dir.display().to_string();
        Self::python(WORKER, (0..8).map(|k| vec![dir.clone(), order.into(), k.to_string(), "8".into()]))
    }

    /// One process writing the workers' shuffled order of `dir` to the control file `control`.
    pub fn order_writer(dir: &Path, control: &Path) -> Self {
        Self::python(ORDER, [vec![dir.display().to_string(), control.display().to_string()]])
    }

    /// Lets them all go and waits until each has finished.
    pub fn run(mut self) {
        for child in &mut self.0 {
            let mut stdin = child.stdin.take().expect("a piped stdin");
            stdin.write_all(b"go\n").expect("tell python3 to go");
        }
        for mut child in self.0 {
            assert!(child.wait().expect("python3").success(), "a python3 process failed");
        }
    }
}
