# pgroute as a container image. Build from the repository root:
#   docker build -t pgroute .
#   docker run --rm -p 6432:6432 -v "$PWD/pgroute.toml:/etc/pgroute/pgroute.toml:ro" pgroute
# examples/docker-compose.yml builds and runs it in front of a primary and two replicas.
FROM oven/bun:1.4.5

WORKDIR /app
# Dependencies first, so editing the source does not invalidate the install layer.
COPY package.json bun.lock ./
RUN bun install --frozen-lockfile --production
# Only what runs: copying the whole context would drag in node_modules and any local dev-cluster data dirs.
COPY tsconfig.json ./
COPY src ./src

USER bun
EXPOSE 6432
ENTRYPOINT ["bun", "src/cli/main.ts"]
CMD ["serve", "-c", "/etc/pgroute/pgroute.toml"]
