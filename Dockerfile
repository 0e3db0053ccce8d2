# The control plane image used by compose.yaml.
FROM node:24-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json prisma.config.ts tsconfig.json ./
COPY gen/package.json gen/
COPY control-plane/package.json control-plane/
COPY agent/package.json agent/
COPY prisma prisma
RUN npm ci --omit=dev --ignore-scripts=false && npm cache clean --force
COPY gen gen
COPY control-plane control-plane
RUN mkdir -p /var/lib/redflag && chown node:node /var/lib/redflag
USER node
ENV REDFLAG_DATA_DIR=/var/lib/redflag
EXPOSE 8080
CMD ["node", "control-plane/src/main.ts"]
