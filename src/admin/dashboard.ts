/**
 * The dashboard page served at `GET /` of the admin listener: src/admin/dashboard.html, embedded as text (also in
 * the compiled executable).
 */
import page from "./dashboard.html" with { type: "text" };

/** The whole page: inline CSS and JS, nothing loaded from elsewhere. */
export const DASHBOARD_HTML = page as unknown as string;
