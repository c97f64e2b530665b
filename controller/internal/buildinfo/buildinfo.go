// Package buildinfo reports the version and VCS revision of the running
// binary. Version is set at link time (-ldflags "-X ...buildinfo.Version=v1.2.3").
package buildinfo

import "runtime/debug"

// Version is the release version; "dev" for local builds.
var Version = "dev"

// commit is set at link time by the Makefile; builds with -buildvcs=false
// (the default here) record no revision otherwise.
var commit = ""

// Commit returns the VCS revision the binary was built from, if known.
func Commit() string {
	if commit != "" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
