// Package version reports the agent's build.
package version

// Version is the release version, set at link time; "dev" for local builds.
var Version = "dev"
