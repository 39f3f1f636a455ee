#!/bin/bash
# usage: resume.sh NAME SEARCH_SECONDS TOP JOBS   (after setup.sh)
# Continue the committed run search/results/NAME on the device: copy it (with its trained/ finalists, which the
# export reuses) to /tmp/runs, resume it under a wall-clock limit, then full-train the front's TOP finalists.
NAME=$1; SECS=$2; TOP=$3; JOBS=$4
export PYTHONPATH=/tmp/pkg RAWDEMOSAIC_MODELS=/tmp/models RAWDEMOSAIC_DATA=${RAWDEMOSAIC_DATA:-/tmp/data} RAWDEMOSAIC_PATCH_CACHE=/tmp/rdcache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /tmp
CLI="from rawdemosaic.cli import main; raise SystemExit(main())"
T0=$(date +%s)
echo "start $(date)"
mkdir -p /tmp/runs && rm -rf /tmp/runs/$NAME /tmp/runs/${NAME}_trained
cp -r /tmp/pkg/rawdemosaic/search/results/$NAME /tmp/runs/$NAME && mv /tmp/runs/$NAME/trained /tmp/runs/${NAME}_trained
python3 /tmp/bin/prebuild.py /tmp/runs/$NAME/config.toml
LEFT=$(( SECS - ($(date +%s) - T0) ))
echo "search for $LEFT s"
timeout -k 10 -s TERM $LEFT python3 -c "$CLI" search resume /tmp/runs/$NAME --quiet
echo "search ended rc=$? $(date)"
pkill -f multiprocessing.spawn; sleep 3
python3 -c "$CLI" search export /tmp/runs/$NAME --train-only --trained /tmp/runs/${NAME}_trained --top $TOP --jobs $JOBS --quiet
echo "export ended rc=$? $(date)"
