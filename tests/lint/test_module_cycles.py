"""Self-test of module_cycles.py on small crates written to a temp dir."""

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).with_name("module_cycles.py")


def check(files: dict[str, str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as root:
        crate = Path(root, "crates", "demo")
        for name, text in files.items():
            path = crate / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (crate / "Cargo.toml").write_text('[package]\nname = "demo"\n', encoding="utf-8")
        return subprocess.run(
            [sys.executable, str(SCRIPT), root], capture_output=True, text=True, check=False
        )


class ModuleCycles(unittest.TestCase):
    def test_a_direct_cycle_fails_and_names_both_edges(self):
        result = check({
            "src/lib.rs": "mod a;\nmod b;\n",
            "src/a.rs": "use crate::b::B;\npub struct A;\n",
            "src/b.rs": "pub struct B(crate::a::A);\n",
        })
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("demo: modules import each other: a, b", result.stdout)
        self.assertIn("a -> b", result.stdout)
        self.assertIn("b -> a", result.stdout)

    def test_a_cycle_through_a_root_reexport_and_a_use_group(self):
        result = check({
            "src/lib.rs": "mod a;\nmod b;\npub use a::A;\n",
            "src/a.rs": "use crate::{b::{self, B as Bee}};\npub struct A;\n",
            "src/b.rs": "use crate::A;\npub struct B;\n",
        })
        self.assertEqual(result.returncode, 1, result.stdout)

    def test_a_child_naming_its_parent_that_names_it_is_a_cycle(self):
        result = check({
            "src/lib.rs": "mod outer;\n",
            "src/outer.rs": "mod inner;\npub struct P;\nfn f() { inner::g(); }\n",
            "src/outer/inner.rs": "use super::P;\npub fn g() {}\n",
        })
        self.assertEqual(result.returncode, 1, result.stdout)

    def test_layers_comments_strings_and_tests_do_not_count(self):
        result = check({
            "src/lib.rs": "mod a;\nmod b;\n#[cfg(test)]\nmod a_tests;\n",
            "src/a.rs": (
                "use crate::b::B;\n"
                "#[cfg(test)]\nmod tests { use crate::b::*; }\n"
            ),
            "src/b.rs": (
                "// crate::a::A is mentioned in a comment\n"
                "pub struct B;\nconst S: &str = \"crate::a::A\";\n"
                "#[cfg(test)]\nmod tests { use crate::a::*; }\n"
            ),
            "src/a_tests.rs": "use crate::a::*;\nuse crate::b::*;\n",
        })
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("no import cycles", result.stdout)


if __name__ == "__main__":
    unittest.main()
