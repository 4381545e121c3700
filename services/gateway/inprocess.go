package gateway

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
)

// localRegistrar registers one service's handlers on a connection that may be
// in-process (app.Platform.Local): the generated client-based registration
// accepts any grpc.ClientConnInterface.
type localRegistrar func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error

// localRegistrations are the services whose REST calls skip the loopback
// gRPC hop when they run in the gateway's process. The in-process connection
// runs the server's own stats handler and interceptor chain (auth,
// environment, validation, error mapping, logging, metrics), so a REST call
// is checked exactly as one over the network.
var localRegistrations = map[string]localRegistrar{
	app.Targeting: func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return targetingv1.RegisterTargetingServiceHandlerClient(ctx, mux, targetingv1.NewTargetingServiceClient(cc))
	},
}
