package migrate_test

import "github.com/berthhq/berth/controller/internal/migrate"

// downTo migrates down until the schema is at version or below, one step
// at a time: later migrations land from several branches, so neither
// "latest minus N" steps nor "one step down" reliably reaches a given
// version while the numbers have gaps or a newer migration exists.
func downTo(mg *migrate.Migrator, version uint) error {
	for {
		st, err := mg.Status()
		if err != nil {
			return err
		}
		if st.Version <= version {
			return nil
		}
		if err := mg.Down(1); err != nil {
			return err
		}
	}
}
