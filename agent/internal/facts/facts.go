// Package facts describes the host the agent runs on, for the controller's
// server page and for enrollment.
package facts

import (
	"context"
	"runtime"
	"time"

	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/agent/internal/version"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Collect gathers the host's facts. A fact that cannot be read is left
// empty rather than failing enrollment.
func Collect(ctx context.Context) *agentv1.HostFacts {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f := &agentv1.HostFacts{
		Os:           runtime.GOOS,
		Arch:         runtime.GOARCH,
		Cpus:         uint32(runtime.NumCPU()),
		AgentVersion: version.Version,
	}
	if info, err := host.InfoWithContext(ctx); err == nil {
		f.Hostname = info.Hostname
		f.Platform = info.Platform
		f.PlatformVersion = info.PlatformVersion
		f.Kernel = info.KernelVersion
		if info.KernelArch != "" {
			f.Arch = info.KernelArch
		}
		if info.BootTime > 0 {
			f.BootTime = timestamppb.New(time.Unix(int64(info.BootTime), 0))
		}
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		f.MemoryBytes = vm.Total
	}
	return f
}
