#!/bin/bash
# usage: drive.sh CONFIG RUN SEARCH_SECONDS TOP JOBS   (after setup.sh)
CONFIG=$1; RUN=$2; SECS=$3; TOP=$4; JOBS=$5
export PYTHONPATH=/tmp/pkg RAWDEMOSAIC_MODELS=/tmp/models RAWDEMOSAIC_DATA=${RAWDEMOSAIC_DATA:-/tmp/data} RAWDEMOSAIC_PATCH_CACHE=/tmp/rdcache PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /tmp
CLI="from rawdemosaic.cli import main; raise SystemExit(main())"
T0=$(date +%s)
echo "start $(date)"
python3 /tmp/bin/prebuild.py $CONFIG
LEFT=$(( SECS - ($(date +%s) - T0) ))
echo "search for $LEFT s"
timeout -k 10 -s TERM $LEFT python3 -c "$CLI" search run --config $CONFIG --out $RUN --quiet
echo "search ended rc=$? $(date)"
pkill -f multiprocessing.spawn; sleep 3
python3 -c "$CLI" search export $RUN --train-only --trained ${RUN}_trained --top $TOP --jobs $JOBS --quiet
echo "export ended rc=$? $(date)"
