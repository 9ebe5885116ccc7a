# The merchant-throttle worker. Built by docker-compose.yml (`docker compose up`), or alone:
#   docker build -t merchant-throttle .
#   docker run -p 8080:8080 -e REDIS_URL=redis://redis:6379 -e MT_WEBHOOK_DEFAULT_SECRET=whsec_... merchant-throttle
# Configuration comes from the environment (KAFKA_BROKERS, REDIS_URL, MT_*), or a mounted file
# given with --config: see the README.

# Node 26 is the Active LTS line (since 2026-10-28; Node 24 moved to maintenance on 2026-10-20).
# The package itself still supports Node 20 and later (engines), and CI tests on 20.

# Build: install everything, compile TypeScript to dist/, then keep only runtime dependencies
# (bullmq and kafkajs are peer dependencies, which npm installs and --omit=dev keeps).
FROM node:26-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY config ./config
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Run: compiled code, runtime dependencies and the default config; no compiler, no tests.
FROM node:26-slim
# production: the development webhook secret and the loopback allowlist of config/default.json
# are refused, delivery is https-only (config/production.json), logs are JSON. The library's
# default address is 127.0.0.1; inside a container that reaches nothing, so the image listens
# on every interface. Override any of them with -e.
ENV NODE_ENV=production \
    MT_HTTP_HOST=0.0.0.0 \
    MT_HTTP_PORT=8080
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/config ./config
USER node
EXPOSE 8080
# Healthy when /readyz answers 200: the rates caught up and every source connected (503 while
# starting, when Redis or Kafka is lost, and once shutting down). The slim image has no curl:
# Node's own fetch asks, with a timeout shorter than Docker's.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.MT_HTTP_PORT || 8080) + '/readyz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# The worker drains in-flight work on SIGTERM; node is PID 1 here and receives it directly.
STOPSIGNAL SIGTERM
CMD ["node", "dist/service/main.js"]
