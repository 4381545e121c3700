import { lazy, Suspense, type ReactNode } from "react";
import { Navigate, Route, Routes, useLocation } from "react-router";
import { Layout } from "./components/Layout";
import { SignInPage } from "./pages/SignInPage";
import { useSession } from "./session/SessionContext";

// Each section loads on first visit, so the first page stays small.
const IntegrationsPage = lazy(() => import("./pages/IntegrationsPage"));
const ConnectionPage = lazy(() => import("./pages/ConnectionPage"));
const SegmentsPage = lazy(() => import("./pages/SegmentsPage"));
const SegmentPage = lazy(() => import("./pages/SegmentPage"));
const NewSegmentPage = lazy(() => import("./pages/NewSegmentPage"));
const EventsPage = lazy(() => import("./pages/EventsPage"));
const TargetingPage = lazy(() => import("./pages/TargetingPage"));
const AdminPage = lazy(() => import("./pages/AdminPage"));

function RequireKey({ children }: { children: ReactNode }) {
  const { key } = useSession();
  const loc = useLocation();
  if (!key) return <Navigate to={`/sign-in?next=${encodeURIComponent(loc.pathname + loc.search)}`} replace />;
  return children;
}

export function App() {
  return (
    <Suspense fallback={<p className="loading">Loading…</p>}>
      <Routes>
        <Route path="/sign-in" element={<SignInPage />} />
        <Route
          element={
            <RequireKey>
              <Layout />
            </RequireKey>
          }
        >
          <Route index element={<Navigate to="/segments" replace />} />
          <Route path="integrations" element={<IntegrationsPage />} />
          <Route path="integrations/connections/:connectionId" element={<ConnectionPage />} />
          <Route path="segments" element={<SegmentsPage />} />
          <Route path="segments/new" element={<NewSegmentPage />} />
          <Route path="segments/:segmentId" element={<SegmentPage />} />
          <Route path="events/*" element={<EventsPage />} />
          <Route path="targeting/*" element={<TargetingPage />} />
          <Route path="admin/*" element={<AdminPage />} />
          <Route path="*" element={<NotFound />} />
        </Route>
      </Routes>
    </Suspense>
  );
}

function NotFound() {
  return (
    <section>
      <h1>Page not found</h1>
      <p>Nothing lives at this address. Pick a section above.</p>
    </section>
  );
}
