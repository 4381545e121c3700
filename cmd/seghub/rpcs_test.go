package main

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// rpc is one method of a seghub service and its full gRPC name
// ("/seghub.x.v1.XService/Method").
type rpc struct {
	full string
	md   protoreflect.MethodDescriptor
}

// seghubRPCs lists every RPC of the seghub services linked into the binary,
// so that a suite that probes each RPC covers a new one as soon as it exists.
func seghubRPCs() []rpc {
	var out []rpc
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "seghub.") {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				out = append(out, rpc{full: "/" + string(sd.FullName()) + "/" + string(md.Name()), md: md})
			}
		}
		return true
	})
	return out
}
