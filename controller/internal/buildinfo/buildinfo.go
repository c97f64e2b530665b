// Package buildinfo reports the version and VCS revision of the running
// binary. Version is set at link time (-ldflags "-X ...buildinfo.Version=v1.2.3").
package buildinfo

import "runtime/debug"

// Version is the release version; "dev" for local builds.
var Version = "dev"

// Commit returns the VCS revision recorded by the Go toolchain, if any.
func Commit() string {
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
