# meshgate image: Node 24 LTS runs the TypeScript directly (type stripping), so the image
# is the source plus production dependencies.
FROM node:24-bookworm-slim
WORKDIR /opt/meshgate
COPY package.json package-lock.json ./
# node@24 is a devDependency for developer machines; the image already has Node 24.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY api ./api
COPY pilot ./pilot
COPY gateway ./gateway
COPY policies ./policies
COPY cli ./cli
COPY examples ./examples
ENV NODE_ENV=production
USER node
# 15010 discovery, 15000 admin (loopback), 15021 health, 15014 pilot debug (loopback)
EXPOSE 15010 15021
ENTRYPOINT ["node", "cli/main.ts"]
CMD ["up", "--config", "examples"]
