//! Golden listings under the repository's `tests/golden/<dir>/`: compare,
//! or rewrite with `PHANTOM_BLESS=1` (review the diff, then commit).

use std::path::PathBuf;

/// One directory of golden files; collects every difference and reports
/// them together in [`Goldens::finish`].
pub struct Goldens {
    dir: PathBuf,
    bless: bool,
    failures: Vec<String>,
    pub checked: usize,
}

impl Goldens {
    /// `tests/golden/<dir>` of the repository.
    pub fn new(dir: &str) -> Goldens {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden").join(dir);
        let bless = std::env::var_os("PHANTOM_BLESS").is_some();
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
        }
        Goldens { dir, bless, failures: Vec::new(), checked: 0 }
    }

    /// `actual` must equal the file `name` (or becomes it when blessing).
    pub fn check(&mut self, name: &str, actual: &str) {
        let file = self.dir.join(name);
        self.checked += 1;
        if self.bless {
            std::fs::write(&file, actual).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(actual) {
            self.failures.push(format!("{} differs (PHANTOM_BLESS=1 to accept):\n{actual}", file.display()));
        }
    }

    /// Fails with every difference found.
    pub fn finish(self) {
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n"));
    }
}
