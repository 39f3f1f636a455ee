# build the search's patch datasets once (workers then load them from $RAWDEMOSAIC_PATCH_CACHE)
import sys, time
from rawdemosaic.search import evolve as E
t0 = time.time()
cfg = E.load_config(sys.argv[1])
tr, va = E.make_trainer(cfg, cfg["search"].get("cfa", "bayer"), int(cfg["search"]["seed"])).datasets()
print(f"datasets {len(tr)} / {len(va)} in {time.time() - t0:.0f} s", flush=True)
