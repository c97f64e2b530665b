package deploys

import (
	"time"

	"github.com/robfig/cron/v3"
)

// ParseCron validates a cron expression (five fields or a descriptor) and
// an IANA time zone ("" is UTC) as scheduled commands do, so every
// schedule in Berth reads cron the same way. Errors wrap ErrInvalid and
// name the flag (--cron, --timezone).
func ParseCron(expr, tz string) (cron.Schedule, *time.Location, error) {
	return parseSchedule(expr, tz)
}

// NextCronRun is the first time after now that sched fires in loc (UTC).
func NextCronRun(sched cron.Schedule, loc *time.Location, now time.Time) time.Time {
	return nextRun(sched, loc, now)
}
