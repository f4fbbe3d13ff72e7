//! The MCP server handler of the demo, built with `rmcp`'s tool macros.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{Json, ServerHandler, tool, tool_handler, tool_router};

use super::calendar::{Calendar, CreateEvent, DeleteEvent, Event, EventList, ListEvents};
use super::search::{self, DocsResults, DocsSearch, WebResults, WebSearch};

/// One session's handler. Every session of a server shares the same calendar.
#[derive(Debug, Clone)]
pub(crate) struct DemoServer {
    calendar: Calendar,
    tool_router: ToolRouter<Self>,
}

impl DemoServer {
    /// Creates a handler on `calendar`.
    pub(crate) fn new(calendar: Calendar) -> Self {
        Self { calendar, tool_router: Self::tool_router() }
    }
}

// A tool's `Err` becomes a result with `isError: true`, so the message reaches the model.
#[tool_router]
impl DemoServer {
    #[tool(
        name = "calendar.create_event",
        description = "Create a calendar event and return it with its id.",
        annotations(title = "Create event", read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn create_event(&self, Parameters(request): Parameters<CreateEvent>) -> Result<Json<Event>, String> {
        self.calendar.create(request).map(Json)
    }

    #[tool(
        name = "calendar.list_events",
        description = "List calendar events by start time, optionally only those starting on one day (YYYY-MM-DD).",
        annotations(title = "List events", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_events(&self, Parameters(request): Parameters<ListEvents>) -> Result<Json<EventList>, String> {
        self.calendar.list(&request).map(Json)
    }

    #[tool(
        name = "calendar.delete_event",
        description = "Delete a calendar event by id and return the deleted event.",
        annotations(
            title = "Delete event",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn delete_event(&self, Parameters(request): Parameters<DeleteEvent>) -> Result<Json<Event>, String> {
        self.calendar.delete(&request).map(Json)
    }

    #[tool(
        name = "search.web",
        description = "Search a small made-up web and return matching pages, best first.",
        annotations(title = "Web search", read_only_hint = true, open_world_hint = false)
    )]
    async fn search_web(&self, Parameters(request): Parameters<WebSearch>) -> Result<Json<WebResults>, String> {
        search::web(request).map(Json)
    }

    #[tool(
        name = "search.docs",
        description = "Search the gateway's made-up documentation and return matching documents, best first.",
        annotations(title = "Documentation search", read_only_hint = true, open_world_hint = false)
    )]
    async fn search_docs(&self, Parameters(request): Parameters<DocsSearch>) -> Result<Json<DocsResults>, String> {
        search::docs(request).map(Json)
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "mcpsec-demo",
    instructions = "Demo tools over made-up data: a calendar (calendar.*) and a search engine (search.*)."
)]
impl ServerHandler for DemoServer {}
