#!/bin/bash
# pack the run (states, logs) and the trained finalists into $OUT
cd /tmp/runs 2>/dev/null && tar czf $OUT/runs.tgz --exclude='*.tmp*' . ; cp /tmp/drive.log $OUT/ 2>/dev/null; ls -la $OUT; tail -5 /tmp/drive.log 2>/dev/null
