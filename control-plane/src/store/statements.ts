import type pg from "pg";

// The hot path's statements (the poll's claim, the batched last-seen write), run on the pool
// directly rather than through Prisma. On PostgreSQL each is a named prepared statement: parsed
// and planned once per connection, then only bound and executed. The embedded database is one
// backend session shared by every connection, where one connection's named statement would
// collide with another's, so there they go unnamed (parsed each time).
export interface Statements {
  readonly prepared: boolean;
  rows<R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]): Promise<R[]>;
}

export function createStatements(pool: pg.Pool, prepared: boolean): Statements {
  return {
    prepared,
    async rows<R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]) {
      const result = await pool.query<R>(prepared ? { name, text, values } : { text, values });
      return result.rows;
    },
  };
}
