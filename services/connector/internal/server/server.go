// Package server implements ConnectorService: the catalogue, connections
// with sealed credentials, OAuth 2.0 with state and PKCE, and credential
// resolution for seghub's own services.
package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/services/connector/internal/store"
)

const (
	refreshBefore = 2 * time.Minute
	checkTimeout  = 15 * time.Second
	maxName       = 100
)

// Server implements ConnectorService.
type Server struct {
	connectorv1.UnimplementedConnectorServiceServer
	store *store.Store
	cfg   *config.Config
	// egress guards every outbound call (credential checks, OAuth token
	// endpoints); http is its client.
	egress *destinations.Egress
	http   *http.Client
	now    func() time.Time
	// refreshing holds a turn (chan struct{}, capacity 1) per connection
	// whose token is being refreshed.
	refreshing sync.Map
	// syncs is segmentsync (UseSyncs); log reports what it failed to answer.
	syncs Syncs
	log   *slog.Logger
}

// New returns the server; a nil egress refuses every private address.
func New(st *store.Store, cfg *config.Config, egress *destinations.Egress) *Server {
	if egress == nil {
		egress = destinations.DefaultEgress()
	}
	return &Server{store: st, cfg: cfg, egress: egress, http: egress.Client(), now: time.Now}
}

func (s *Server) oauthConfig(typ string) *oauth2.Config {
	base := strings.TrimRight(s.cfg.DestinationURL(typ), "/")
	return &oauth2.Config{
		ClientID: s.cfg.CommandBarClientID, ClientSecret: s.cfg.CommandBarClientSecret,
		// Assumed endpoint paths: CommandBar does not publish its OAuth URLs.
		Endpoint:    oauth2.Endpoint{AuthURL: base + "/oauth/authorize", TokenURL: base + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: strings.TrimRight(s.cfg.PublicURL, "/") + "/oauth/callback",
	}
}

func (s *Server) typePB(t destinations.Type) *connectorv1.DestinationType {
	t.RecurringLimit = s.cfg.RecurringLimit(t.Name, t.RecurringLimit)
	pb := &connectorv1.DestinationType{Type: t.Name, DisplayName: t.DisplayName, AuthMethod: connectorv1.AuthMethod(t.Auth),
		SegmentsOut: t.SegmentsOut, EventsIn: t.EventsIn, EventsOut: t.EventsOut, SegmentsIn: t.SegmentsIn,
		RecurringLimit: uint32(t.RecurringLimit), BatchSize: uint32(t.BatchSize), RateLimitPerMinute: uint32(t.RatePerMinute),
		CredentialFields: t.CredentialFields, DefaultIdentityProperty: t.DefaultIdentity, DefaultPropertyPrefix: t.PropertyPrefix}
	if t.DefaultInterval > 0 {
		pb.DefaultInterval = durationpb.New(t.DefaultInterval)
	}
	if t.Retention > 0 {
		pb.Retention = durationpb.New(t.Retention)
	}
	return pb
}

// ConnectionPB converts a stored connection (never its secrets).
func ConnectionPB(c *store.Connection) *connectorv1.Connection {
	status := map[string]connectorv1.ConnectionStatus{store.StatusConnected: connectorv1.ConnectionStatus_CONNECTION_STATUS_CONNECTED, store.StatusNeedsReauth: connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH, store.StatusError: connectorv1.ConnectionStatus_CONNECTION_STATUS_ERROR}[c.Status]
	pb := &connectorv1.Connection{ConnectionId: c.ID, Type: c.Type, Name: c.Name, Status: status, LastError: c.LastError, Account: c.Account,
		Settings: &connectorv1.ConnectionSettings{SendEvents: c.SendEvents, IdentityProperty: c.IdentityProperty, PropertyPrefix: c.PropertyPrefix}, CreateTime: timestamppb.New(c.Created), UpdateTime: timestamppb.New(c.Updated)}
	if t, ok := destinations.Lookup(c.Type); ok && c.PropertyPrefix == "" {
		pb.Settings.PropertyPrefix = t.PropertyPrefix // stored before the setting existed
	}
	if !c.LastErrorAt.IsZero() {
		pb.LastErrorTime = timestamppb.New(c.LastErrorAt)
	}
	if t, ok := destinations.Lookup(c.Type); ok && t.ReceivesWebhooks() {
		pb.WebhookPath = "/webhooks/" + c.Type + "/" + c.ID
	}
	return pb
}

// ListDestinationTypes implements ConnectorService.
func (s *Server) ListDestinationTypes(context.Context, *connectorv1.ListDestinationTypesRequest) (*connectorv1.ListDestinationTypesResponse, error) {
	resp := &connectorv1.ListDestinationTypesResponse{}
	for _, t := range destinations.All() {
		resp.Types = append(resp.Types, s.typePB(t))
	}
	return resp, nil
}

func lookup(typ string) (destinations.Type, error) {
	t, ok := destinations.Lookup(typ)
	if !ok {
		var names []string
		for _, t := range destinations.All() {
			names = append(names, t.Name)
		}
		return t, apperr.Invalid("type", fmt.Sprintf("unknown destination type %q; one of %s", typ, strings.Join(names, ", ")))
	}
	return t, nil
}

func checkName(name string) (string, error) { return apperr.Name("name", name, maxName) }

func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b)
}

// check makes the destination's test call with creds.
func (s *Server) check(ctx context.Context, t destinations.Type, creds map[string]string) error {
	if t.SegmentsIn {
		return nil // sources call us; there is nothing to call
	}
	// Refused early so the caller learns which field is wrong; the dial
	// guard refuses them again whatever DNS answers later.
	for _, f := range t.URLFields() {
		if err := s.egress.CheckURL(ctx, creds[f]); err != nil {
			return apperr.Invalid("credentials."+f, err.Error())
		}
	}
	a, err := destinations.New(t.Name, destinations.Config{BaseURL: s.cfg.DestinationURL(t.Name), Credentials: creds, Egress: s.egress, MaxAttempts: 3, MaxBackoff: time.Second})
	if err != nil {
		return apperr.Invalid("credentials", err.Error())
	}
	if t.Name == "webhook" {
		return nil // receivers may not answer a ping; the URL was validated
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	err = a.Check(ctx)
	switch destinations.KindOf(err) {
	case destinations.AuthFailed:
		return apperr.FailedPrecondition("%s refused these credentials (%v); check them and try again — nothing was saved", t.DisplayName, err)
	case destinations.Permanent:
		return apperr.FailedPrecondition("%s rejected the test call (%v); nothing was saved", t.DisplayName, err)
	case destinations.Refused:
		return apperr.FailedPrecondition("%s cannot be called: %v; nothing was saved", t.DisplayName, err)
	}
	if err != nil {
		return apperr.Unavailable("could not reach %s to check the credentials (%v); nothing was saved, try again", t.DisplayName, err)
	}
	return nil
}

// CreateConnection implements ConnectorService.
func (s *Server) CreateConnection(ctx context.Context, req *connectorv1.CreateConnectionRequest) (*connectorv1.CreateConnectionResponse, error) {
	t, err := lookup(req.GetType())
	if err != nil {
		return nil, err
	}
	if t.Auth == destinations.AuthOAuth2 {
		return nil, apperr.FailedPrecondition("%s connects by OAuth: call StartAuthorization (POST /v1/connections:authorize) and open the returned URL", t.DisplayName)
	}
	name, err := checkName(req.GetName())
	if err != nil {
		return nil, err
	}
	creds := map[string]string{}
	for _, f := range t.CredentialFields {
		v := strings.TrimSpace(req.GetCredentials()[f])
		if v == "" {
			return nil, apperr.Invalid("credentials."+f, "is required for "+t.DisplayName)
		}
		creds[f] = v
	}
	for k := range req.GetCredentials() {
		if _, ok := creds[k]; !ok {
			return nil, apperr.Invalid("credentials."+k, fmt.Sprintf("is not a credential of %s (expected %s)", t.DisplayName, strings.Join(t.CredentialFields, ", ")))
		}
	}
	prefix, err := propertyPrefix(req.GetSettings(), t)
	if err != nil {
		return nil, err
	}
	if err := s.checkIdentity(ctx, t, identity(req.GetSettings(), t)); err != nil {
		return nil, err
	}
	if err := s.check(ctx, t, creds); err != nil {
		return nil, err
	}
	c := &store.Connection{PropertyPrefix: prefix, ID: ids.New("conn"), Env: auth.MustEnvironment(ctx), Type: t.Name, Name: name, Account: creds[t.AccountField], Status: store.StatusConnected,
		SendEvents: req.GetSettings().GetSendEvents(), IdentityProperty: identity(req.GetSettings(), t), Credentials: creds}
	if t.ReceivesWebhooks() {
		c.SigningSecret = newSecret()
	}
	if err := s.store.Create(ctx, c); err != nil {
		return nil, err
	}
	pb := ConnectionPB(c)
	s.withUsage(ctx, pb)
	return &connectorv1.CreateConnectionResponse{Connection: pb, SigningSecret: c.SigningSecret}, nil
}

func identity(set *connectorv1.ConnectionSettings, t destinations.Type) string {
	if p := strings.TrimSpace(set.GetIdentityProperty()); p != "" {
		return p
	}
	return t.DefaultIdentity
}

// propertyPrefix is the prefix a connection of t keeps: the setting,
// validated, or t's default; types that name no property take none.
func propertyPrefix(set *connectorv1.ConnectionSettings, t destinations.Type) (string, error) {
	p := set.GetPropertyPrefix()
	switch {
	case t.PropertyPrefix == "" && p != "":
		return "", apperr.Invalid("settings.property_prefix", t.DisplayName+" keeps no property per segment; leave the prefix empty")
	case p == "":
		return t.PropertyPrefix, nil
	}
	if err := destinations.ValidatePropertyPrefix(p); err != nil {
		return "", apperr.Invalid("settings.property_prefix", err.Error())
	}
	return p, nil
}

func checkID(id string) error {
	if strings.TrimSpace(id) == "" {
		return apperr.Invalid("connection_id", "is required")
	}
	return nil
}

// GetConnection implements ConnectorService.
func (s *Server) GetConnection(ctx context.Context, req *connectorv1.GetConnectionRequest) (*connectorv1.GetConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	c, err := s.store.Get(ctx, auth.MustEnvironment(ctx), req.GetConnectionId(), false)
	if err != nil {
		return nil, err
	}
	pb := ConnectionPB(c)
	s.withUsage(ctx, pb)
	return &connectorv1.GetConnectionResponse{Connection: pb}, nil
}

// connectionCursor is ListConnections' page token: the last connection
// returned, in (name, id) order.
type connectionCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

// ListConnections implements ConnectorService.
func (s *Server) ListConnections(ctx context.Context, req *connectorv1.ListConnectionsRequest) (*connectorv1.ListConnectionsResponse, error) {
	var cur connectionCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	cs, err := s.store.List(ctx, auth.MustEnvironment(ctx), req.GetType(), cur.Name, cur.ID, size+1)
	if err != nil {
		return nil, err
	}
	resp := &connectorv1.ListConnectionsResponse{}
	if len(cs) > size {
		cs = cs[:size]
		last := cs[size-1]
		resp.NextPageToken = paging.Encode(connectionCursor{Name: last.Name, ID: last.ID})
	}
	for _, c := range cs {
		resp.Connections = append(resp.Connections, ConnectionPB(c))
	}
	s.withUsage(ctx, resp.Connections...)
	return resp, nil
}

// UpdateConnection implements ConnectorService.
func (s *Server) UpdateConnection(ctx context.Context, req *connectorv1.UpdateConnectionRequest) (*connectorv1.UpdateConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	c, err := s.store.Get(ctx, auth.MustEnvironment(ctx), req.GetConnectionId(), true)
	if err != nil {
		return nil, err
	}
	t, _ := destinations.Lookup(c.Type)
	if req.Name != nil {
		if c.Name, err = checkName(req.GetName()); err != nil {
			return nil, err
		}
	}
	if set := req.GetSettings(); set != nil {
		c.SendEvents = set.GetSendEvents()
		// An unchanged property passes even if its last holder has left
		// since, as UpdateSync lets it.
		if prop := identity(set, t); prop != c.IdentityProperty {
			if err := s.checkIdentity(ctx, t, prop); err != nil {
				return nil, err
			}
			c.IdentityProperty = prop
		}
		if c.PropertyPrefix, err = propertyPrefix(set, t); err != nil {
			return nil, err
		}
	}
	fields := store.Fields{Name: req.Name != nil, Settings: req.GetSettings() != nil}
	if len(req.GetCredentials()) == 0 {
		if err := s.store.UpdateSettings(ctx, c, fields); err != nil {
			return nil, err
		}
	} else {
		if t.Auth == destinations.AuthOAuth2 {
			return nil, apperr.FailedPrecondition("%s credentials come from OAuth; start a new authorisation to replace them", t.DisplayName)
		}
		creds := map[string]string{}
		for _, f := range t.CredentialFields {
			creds[f] = strings.TrimSpace(req.GetCredentials()[f])
			if creds[f] == "" {
				return nil, apperr.Invalid("credentials."+f, "is required for "+t.DisplayName)
			}
		}
		if err := s.check(ctx, t, creds); err != nil {
			return nil, err
		}
		// Compared with the version read above: credentials replaced by a
		// concurrent update make this one fail rather than silently lose.
		c.Credentials, c.Account = creds, creds[t.AccountField]
		if err := s.store.UpdateCredentials(ctx, c, store.CredentialWrite{Reconnect: true, Fields: fields}); err != nil {
			return nil, err
		}
	}
	c, err = s.store.Get(ctx, c.Env, c.ID, false)
	if err != nil {
		return nil, err
	}
	pb := ConnectionPB(c)
	s.withUsage(ctx, pb)
	return &connectorv1.UpdateConnectionResponse{Connection: pb}, nil
}

// DeleteConnection implements ConnectorService.
func (s *Server) DeleteConnection(ctx context.Context, req *connectorv1.DeleteConnectionRequest) (*connectorv1.DeleteConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	return &connectorv1.DeleteConnectionResponse{}, s.store.Delete(ctx, auth.MustEnvironment(ctx), req.GetConnectionId())
}

// StartAuthorization implements ConnectorService.
func (s *Server) StartAuthorization(ctx context.Context, req *connectorv1.StartAuthorizationRequest) (*connectorv1.StartAuthorizationResponse, error) {
	t, err := lookup(req.GetType())
	if err != nil {
		return nil, err
	}
	if t.Auth != destinations.AuthOAuth2 {
		return nil, apperr.FailedPrecondition("%s does not connect by OAuth; use CreateConnection with %s", t.DisplayName, strings.Join(t.CredentialFields, ", "))
	}
	name, err := checkName(req.GetName())
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.GetAccount()) == "" {
		return nil, apperr.Invalid("account", "name the "+t.DisplayName+" organisation to connect")
	}
	browser, err := browserNonce(ctx)
	if err != nil {
		return nil, err
	}
	if browser == "" {
		// A caller without a browser of its own gets the nonce to give the
		// browser that completes the flow, as its seghub_oauth cookie.
		browser = randomToken()
		if err := grpc.SetHeader(ctx, metadata.Pairs(BrowserMetadata, browser)); err != nil {
			return nil, apperr.Internal(err, "could not return the browser nonce")
		}
	}
	if _, err := propertyPrefix(req.GetSettings(), t); err != nil {
		return nil, err
	}
	if err := s.checkIdentity(ctx, t, identity(req.GetSettings(), t)); err != nil {
		return nil, err
	}
	state := randomToken()
	verifier := oauth2.GenerateVerifier()
	exp := s.now().Add(s.cfg.OAuthStateTTL)
	account := strings.TrimSpace(req.GetAccount())
	if err := s.store.SaveState(ctx, state, store.OAuthState{Env: auth.MustEnvironment(ctx), Type: t.Name, Name: name, Account: account,
		SendEvents: req.GetSettings().GetSendEvents(), IdentityProperty: identity(req.GetSettings(), t), Verifier: verifier, Expires: exp, Browser: browser}); err != nil {
		return nil, err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if t.GrantedAccount != "" {
		opts = append(opts, oauth2.SetAuthURLParam(t.GrantedAccount, account))
	}
	u := s.oauthConfig(t.Name).AuthCodeURL(state, opts...)
	return &connectorv1.StartAuthorizationResponse{AuthorizeUrl: u, ExpireTime: timestamppb.New(exp)}, nil
}

// BrowserMetadata is the gRPC metadata key carrying the nonce of the
// browser an OAuth flow is bound to: set by the gateway from (or for) its
// seghub_oauth cookie on StartAuthorization and CompleteAuthorization.
const BrowserMetadata = "seghub-oauth-browser"

// browserNonce returns the nonce the caller bound the flow to, if any.
func browserNonce(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(BrowserMetadata)
	if len(v) == 0 || v[0] == "" {
		return "", nil
	}
	if len(v) > 1 || len(v[0]) < 32 || len(v[0]) > 128 || strings.Trim(v[0], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return "", apperr.Invalid(BrowserMetadata, "must be one value of 32 to 128 URL-safe base64 characters (the seghub_oauth cookie)")
	}
	return v[0], nil
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// CompleteAuthorization implements ConnectorService.
func (s *Server) CompleteAuthorization(ctx context.Context, req *connectorv1.CompleteAuthorizationRequest) (*connectorv1.CompleteAuthorizationResponse, error) {
	if req.GetState() == "" {
		return nil, apperr.Invalid("state", "is required")
	}
	browser, err := browserNonce(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.store.UseState(ctx, req.GetState(), browser)
	if err != nil {
		return nil, err
	}
	// A caller acting for an environment may only complete its own states.
	if env := auth.MustEnvironment(ctx); env != "" && env != st.Env {
		return nil, store.ErrBadState
	}
	if req.GetError() != "" {
		return nil, apperr.FailedPrecondition("authorisation was not granted: %s", req.GetError())
	}
	if req.GetCode() == "" {
		return nil, apperr.Invalid("code", "is required")
	}
	t, _ := destinations.Lookup(st.Type)
	xctx := context.WithValue(ctx, oauth2.HTTPClient, s.http)
	tok, err := s.oauthConfig(st.Type).Exchange(xctx, req.GetCode(), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return nil, apperr.FailedPrecondition("%s refused the authorisation code: %s", t.DisplayName, oauthProblem(err))
	}
	if err := checkGrantedAccount(t, tok, st.Account); err != nil {
		return nil, err
	}
	c := &store.Connection{ID: ids.New("conn"), Env: st.Env, Type: st.Type, Name: st.Name, Account: st.Account, Status: store.StatusConnected,
		SendEvents: st.SendEvents, IdentityProperty: st.IdentityProperty, Credentials: tokenCreds(tok, st.Account)}
	if t.ReceivesWebhooks() {
		c.SigningSecret = newSecret()
	}
	if err := s.store.Create(ctx, c); err != nil {
		return nil, err
	}
	return &connectorv1.CompleteAuthorizationResponse{Connection: ConnectionPB(c), EnvironmentId: st.Env, SigningSecret: c.SigningSecret}, nil
}

// checkGrantedAccount refuses a token that does not grant the account the
// user asked for (the user may pick another on the consent screen): the
// connection would otherwise show one account and deliver to another.
func checkGrantedAccount(t destinations.Type, tok *oauth2.Token, asked string) error {
	if t.GrantedAccount == "" {
		return nil
	}
	granted, _ := tok.Extra(t.GrantedAccount).(string)
	if granted == "" {
		return apperr.FailedPrecondition("%s's token response does not say which account it grants (%s); nothing was saved", t.DisplayName, t.GrantedAccount)
	}
	if granted != asked {
		return apperr.PermissionDenied("account: %s granted access to %q, not %q as asked; nothing was saved — start the authorisation again and choose %q on %s's consent screen", t.DisplayName, granted, asked, asked, t.DisplayName)
	}
	return nil
}

func tokenCreds(tok *oauth2.Token, account string) map[string]string {
	return map[string]string{"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expiry": tok.Expiry.UTC().Format(time.RFC3339Nano), "org_id": account}
}

// ResolveConnection implements ConnectorService.
func (s *Server) ResolveConnection(ctx context.Context, req *connectorv1.ResolveConnectionRequest) (*connectorv1.ResolveConnectionResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	p, _ := auth.FromContext(ctx)
	if !p.Internal {
		// Decrypted credentials go to seghub's own components only, never to
		// an API key of any role.
		return nil, apperr.PermissionDenied("ResolveConnection is reserved for seghub's own components")
	}
	var c *store.Connection
	var err error
	if p.EnvironmentID == "" {
		c, err = s.store.GetByID(ctx, req.GetConnectionId())
	} else {
		c, err = s.store.Get(ctx, p.EnvironmentID, req.GetConnectionId(), true)
	}
	if err != nil {
		return nil, err
	}
	t, _ := destinations.Lookup(c.Type)
	if t.Auth == destinations.AuthOAuth2 {
		if err := s.refresh(ctx, c); err != nil {
			return nil, err
		}
	}
	return &connectorv1.ResolveConnectionResponse{Connection: ConnectionPB(c), Destination: s.typePB(t), Credentials: c.Credentials, SigningSecret: c.SigningSecret, EnvironmentId: c.Env}, nil
}

// refresh renews an OAuth access token that expires within refreshBefore;
// a refused refresh marks the connection needs_reauth. Resolvers in this
// process refresh a connection one at a time, each reading what the one
// before stored (with refresh tokens that rotate, a second refresh of the
// same token would be refused). Writes compare and swap on the credentials
// version, so a token another process stored first is used, not
// overwritten.
func (s *Server) refresh(ctx context.Context, c *store.Connection) error {
	if c.Status != store.StatusNeedsReauth && !s.due(c) {
		return nil
	}
	release, err := s.lockRefresh(ctx, c.ID)
	if err != nil {
		return err
	}
	defer release()
	for attempt := 0; ; attempt++ {
		fresh, err := s.store.Get(ctx, c.Env, c.ID, true)
		if err != nil {
			return err
		}
		*c = *fresh
		if c.Status == store.StatusNeedsReauth {
			return apperr.FailedPrecondition("connection %s needs re-authorisation: %s", c.ID, c.LastError)
		}
		exp, _ := time.Parse(time.RFC3339Nano, c.Credentials["expiry"])
		if !s.due(c) || (attempt > 0 && s.now().Before(exp)) {
			return nil
		}
		if attempt == maxRefreshAttempts {
			return &apperr.Error{Code: codes.Aborted, Message: fmt.Sprintf("connection %s: its token kept changing during refresh; try again", c.ID)}
		}
		if lost, err := s.refreshOnce(ctx, c); err != nil || !lost {
			return err
		}
	}
}

// due reports whether c's access token expires within refreshBefore.
func (s *Server) due(c *store.Connection) bool {
	exp, _ := time.Parse(time.RFC3339Nano, c.Credentials["expiry"])
	return !exp.IsZero() && !s.now().Add(refreshBefore).Before(exp)
}

// lockRefresh waits for its turn to refresh connection id (or for ctx).
func (s *Server) lockRefresh(ctx context.Context, id string) (release func(), err error) {
	l, _ := s.refreshing.LoadOrStore(id, make(chan struct{}, 1))
	turn := l.(chan struct{})
	select {
	case turn <- struct{}{}:
		return func() { <-turn }, nil
	case <-ctx.Done():
		return nil, apperr.Unavailable("connection %s: gave up waiting for a token refresh in progress: %v", id, ctx.Err())
	}
}

const maxRefreshAttempts = 3

// refreshOnce asks the destination for a new token and stores it; lost
// reports that the credentials changed meanwhile, so nothing was written.
func (s *Server) refreshOnce(ctx context.Context, c *store.Connection) (lost bool, err error) {
	old := &oauth2.Token{AccessToken: c.Credentials["access_token"], RefreshToken: c.Credentials["refresh_token"], Expiry: time.Now().Add(-time.Second)}
	xctx := context.WithValue(ctx, oauth2.HTTPClient, s.http)
	tok, err := s.oauthConfig(c.Type).TokenSource(xctx, old).Token()
	if err != nil {
		marked, merr := s.store.MarkNeedsReauth(ctx, c, "token refresh refused: "+oauthProblem(err))
		if merr != nil {
			return false, merr
		}
		if !marked {
			return true, nil // refused a refresh token that was replaced meanwhile
		}
		return false, apperr.FailedPrecondition("connection %s needs re-authorisation: the destination refused to refresh its token", c.ID)
	}
	next := *c
	next.Credentials = tokenCreds(tok, c.Account)
	err = s.store.UpdateCredentials(ctx, &next, store.CredentialWrite{LiftReauth: true})
	if errors.Is(err, store.ErrCredentialsChanged) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	*c = next
	return false, nil
}

// ReportConnectionStatus implements ConnectorService. A report writes the
// status columns only: the reporter's view of the credentials may be stale.
func (s *Server) ReportConnectionStatus(ctx context.Context, req *connectorv1.ReportConnectionStatusRequest) (*connectorv1.ReportConnectionStatusResponse, error) {
	if err := checkID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	var st string
	switch req.GetStatus() {
	case connectorv1.ConnectionStatus_CONNECTION_STATUS_CONNECTED:
		st = store.StatusConnected
	case connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH:
		st = store.StatusNeedsReauth
	case connectorv1.ConnectionStatus_CONNECTION_STATUS_ERROR:
		st = store.StatusError
	default:
		return nil, apperr.Invalid("status", "must be CONNECTED, NEEDS_REAUTH or ERROR")
	}
	env := auth.MustEnvironment(ctx)
	if err := s.store.SetStatus(ctx, env, req.GetConnectionId(), st, req.GetMessage()); err != nil {
		return nil, err
	}
	c, err := s.store.Get(ctx, env, req.GetConnectionId(), false)
	if err != nil {
		return nil, err
	}
	return &connectorv1.ReportConnectionStatusResponse{Connection: ConnectionPB(c)}, nil
}

// oauthProblem describes a failed token request without repeating the
// token endpoint's body beyond a short excerpt of its error fields.
func oauthProblem(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := "HTTP " + strconv.Itoa(re.Response.StatusCode)
		if re.ErrorCode != "" {
			msg += ": " + destinations.Excerpt(re.ErrorCode)
		}
		if re.ErrorDescription != "" {
			msg += " (" + destinations.Excerpt(re.ErrorDescription) + ")"
		}
		return msg
	}
	return destinations.NetworkProblem(err)
}
