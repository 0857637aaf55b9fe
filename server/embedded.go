package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Embedded is a throwaway PostgreSQL for trying pgchaos without a database
// of one's own: started from the machine's PostgreSQL binaries in a temp
// dir, removed on Stop.
type Embedded struct {
	pg *pgtest.Postgres
}

// StartEmbedded starts the throwaway PostgreSQL. binDir "" finds the
// binaries with pg_config.
func StartEmbedded(ctx context.Context, binDir string, log *slog.Logger) (*Embedded, error) {
	pg, err := pgtest.StartPostgres(ctx, pgtest.Options{BinDir: binDir, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("start the embedded PostgreSQL: %w", err)
	}
	return &Embedded{pg: pg}, nil
}

// Addr is the embedded PostgreSQL's host:port.
func (e *Embedded) Addr() string { return e.pg.Addr() }

// ConnString is how a client reaches the embedded database through addr.
func (e *Embedded) ConnString(addr string) string {
	return pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres")
}

// Stop shuts the database down and removes its files.
func (e *Embedded) Stop() error { return e.pg.Stop() }
