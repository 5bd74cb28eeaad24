//! Task samplers and datasets exposed to TypeScript.
