# The merchant-throttle worker. Built by docker-compose.yml (`docker compose up`), or alone:
#   docker build -t merchant-throttle .
# Configuration comes from the environment (KAFKA_BROKERS, REDIS_URL, MT_*): see the README.

# Build: install everything, compile TypeScript to dist/, then keep only runtime dependencies.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY config ./config
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Run: compiled code, runtime dependencies and the default config; no compiler, no tests.
FROM node:20-slim
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/config ./config
USER node
EXPOSE 8080
# The worker drains in-flight work on SIGTERM; node is PID 1 here and receives it directly.
STOPSIGNAL SIGTERM
CMD ["node", "dist/service/main.js"]
