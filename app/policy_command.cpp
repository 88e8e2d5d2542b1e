// app/policy_command.cpp — `postvault policy explain`: what the policy decides for a message,
// per recipient, with the rules that fired and the evidence, without sending anything.
//
//   postvault policy explain --config FILE --from ADDR --to ADDR [--to ADDR...] [--direction D]
//                            [--json] MESSAGE.eml
//
// --json prints {"recipients": [{"address", "rules", "actions", "evidence"}], "strip_subject_tag"}.
// A policy that does not load is reported with FILE:LINE:COLUMN per problem (exit 1).
#include <fstream>
#include <iostream>
#include <sstream>

#include "app/commands.h"
#include "gateway/policy/policy.h"

namespace postvault::app {

int run_policy_explain(const PolicyCommand& command) {
    auto policy = policy::Policy::load(command.config_path);
    if (!policy) {
        std::cerr << policy.error().message << "\n";
        return 1;
    }
    std::ifstream file(command.message_path, std::ios::binary);
    if (!file) {
        std::cerr << "postvault: cannot read " << command.message_path << "\n";
        return 1;
    }
    std::stringstream bytes;
    bytes << file.rdbuf();
    policy::Envelope envelope{command.from, command.to, command.direction};
    const policy::Verdict verdict = (*policy)->evaluate(envelope, bytes.str());
    if (command.json) {
        std::cout << to_json(verdict).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        return 0;
    }
    for (const auto& decision : verdict.recipients) {
        std::cout << decision.address << ":\n";
        if (decision.rules.empty()) {
            std::cout << "  no rule fired: delivered as the delivery settings say\n";
            continue;
        }
        const auto& a = decision.actions;
        std::string actions;
        auto add = [&actions](const std::string& text) { actions += (actions.empty() ? "" : ", ") + text; };
        if (!a.reject.empty()) add("reject (\"" + a.reject + "\")");
        if (a.quarantine) add("quarantine");
        if (!a.fallback.empty()) {
            std::string methods;
            for (const auto& m : a.encrypt) methods += m + " or ";
            add("encrypt with " + methods + "else " + a.fallback);
        }
        if (a.sign) add("sign");
        if (a.require_tls) add("require TLS");
        if (a.notify) add("notify the sender");
        for (const auto& tag : a.tags) add("tag " + tag);
        std::cout << "  rules: ";
        for (std::size_t i = 0; i < decision.rules.size(); ++i) std::cout << (i ? ", " : "") << decision.rules[i];
        std::cout << "\n  actions: " << (actions.empty() ? "none" : actions) << "\n";
        for (const auto& e : decision.evidence) std::cout << "  evidence (" << e.rule << "): " << e.text << "\n";
    }
    if (verdict.strip_subject_tag) std::cout << "the ad-hoc subject tag is removed on delivery\n";
    return 0;
}

}  // namespace postvault::app
