#!/bin/bash
# snapshot the package (with search/ as rawdemosaic.search) and the registry into /tmp, so re-synced calls do not touch a running job
rm -rf /tmp/pkg /tmp/models /tmp/bin && mkdir -p /tmp/pkg && cp -r rawdemosaic /tmp/pkg/ && rm -rf /tmp/pkg/rawdemosaic/search && cp -r search /tmp/pkg/rawdemosaic/search && cp -r models /tmp/models && cp -r .gpu/bin /tmp/bin && cp -r search/configs /tmp/configs
echo "setup done"
