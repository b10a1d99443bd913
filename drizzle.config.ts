import { defineConfig } from 'drizzle-kit';

// `npm run db:generate` writes SQL migrations from registry/schema.ts and registry/console-schema.ts; they are committed and applied by
// openRegistry() on start (registry/migrate.ts).
export default defineConfig({
  dialect: 'postgresql',
  schema: ['./registry/schema.ts', './registry/console-schema.ts'],
  out: './registry/migrations',
});
