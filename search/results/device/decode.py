# decode the carried lossless WebP corpus back to PNG (same names) and check a digest list when given
import sys, hashlib
from pathlib import Path
import numpy as np
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
digests = {}
if len(sys.argv) > 3:
    for line in Path(sys.argv[3]).read_text().split("\n"):
        if line.strip():
            k, v = line.split()
            digests[k] = v
n = bad = 0
for f in sorted(src.glob("*/*.webp")):
    o = dst / f.parent.name / (f.stem + ".png")
    o.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(Image.open(f).convert("RGB"))
    key = f"{f.parent.name}/{f.stem}"
    if digests and hashlib.sha256(a.tobytes()).hexdigest()[:16] != digests.get(key):
        bad += 1
    Image.fromarray(a).save(o, compress_level=1)
    n += 1
print(f"decoded {n} images into {dst}, {bad} digest mismatches")
